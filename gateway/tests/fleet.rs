//! A fleet of gateways behind HAProxy, on a network of namespaces: a feed
//! host (feed-sim: lines A and B, snapshot channel, retransmission server),
//! three gateway hosts, a balancer host and a client host, on one bridge,
//! multicast across it with interface and TTL set. loadtest's clients
//! (with --reconnect) go through the balancer while nodes are killed,
//! restarted late and drained one by one; every client's stream is checked
//! update by update and its final values against the simulator's truth.
//!
//! Needs root (namespaces) and Debian's haproxy; without the privilege the
//! test says so and passes without running (CI has it).

mod common;
#[path = "support/netns.rs"]
mod netns;

use common::{exited, http_get};
use feed_sim::SimConfig;
use netns::Net;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const FEED: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const LB: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 20);
const WS_PORT: u16 = 8080;
const GRPC_PORT: u16 = 50051;
const STATS_PORT: u16 = 8404;
const RETRANS_PORT: u16 = 31010;
const NODES: [&str; 3] = ["gw1", "gw2", "gw3"];

fn node_addr(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 77, 0, 11 + i as u8)
}

/// The feed's groups: distinct from every other test's (these packets stay
/// inside the namespaces anyway).
struct Groups {
    a: (Ipv4Addr, u16),
    b: (Ipv4Addr, u16),
    snapshot: (Ipv4Addr, u16),
}

const GROUPS: Groups = Groups {
    a: (Ipv4Addr::new(239, 77, 0, 1), 31001),
    b: (Ipv4Addr::new(239, 77, 0, 2), 31002),
    snapshot: (Ipv4Addr::new(239, 77, 0, 3), 31003),
};

/// One gateway process in its host.
struct Node {
    name: &'static str,
    index: usize,
    child: Option<Child>,
    log: std::path::PathBuf,
    /// More gateway flags.
    extra: Vec<String>,
}

impl Node {
    fn start(net: &Net, index: usize, dir: &std::path::Path, extra: Vec<String>) -> Node {
        let name = NODES[index];
        let log = dir.join(format!("{name}.log"));
        let mut node = Node { name, index, child: None, log, extra };
        node.restart(net);
        node
    }

    fn restart(&mut self, net: &Net) {
        let a = node_addr(self.index);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let child = net
            .command(self.name, env!("CARGO_BIN_EXE_gateway"))
            .args(["--group", &GROUPS.a.0.to_string(), "--feed-port", &GROUPS.a.1.to_string()])
            .args(["--group-b", &GROUPS.b.0.to_string(), "--feed-port-b", &GROUPS.b.1.to_string()])
            .args(["--snapshot-group", &GROUPS.snapshot.0.to_string()])
            .args(["--snapshot-port", &GROUPS.snapshot.1.to_string()])
            .args(["--retrans-addr", &format!("{FEED}:{RETRANS_PORT}")])
            .args(["--interface", &a.to_string()])
            .args(["--ws-addr", &format!("{a}:{WS_PORT}"), "--grpc-addr", &format!("{a}:{GRPC_PORT}")])
            .args(["--metrics-addr", "127.0.0.1:8084", "--node-name", self.name])
            .args(["--drain-delay-ms", "1500", "--drain-spread-ms", "1000", "--shutdown-grace-ms", "2000"])
            // Every handshake comes from the balancer's one address.
            .args(["--max-pending-handshakes-per-ip", "1024"])
            // The fleet's network is the test's own namespaces, reached by
            // nothing else: no credentials needed.
            .arg("--insecure")
            .args(["--ws-threads", "1", "--log", "warn"])
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting a gateway in its namespace");
        self.child = Some(child);
    }

    fn ws(&self) -> SocketAddr {
        SocketAddr::new(node_addr(self.index).into(), WS_PORT)
    }

    fn ready(&self, net: &Net) -> bool {
        let addr = self.ws();
        net.run_in(self.name, move || http_get(addr, "/readyz")).is_some_and(|(s, _)| s == 200)
    }

    /// The node's /metrics page (empty if it does not answer).
    fn metrics(&self, net: &Net) -> String {
        net.run_in(self.name, || http_get("127.0.0.1:8084".parse().unwrap(), "/metrics"))
            .map(|r| r.1)
            .unwrap_or_default()
    }

    /// Open WebSocket connections, read from the node's /metrics.
    fn connections(&self, net: &Net) -> Option<u64> {
        self.metrics(net)
            .lines()
            .find(|l| l.starts_with("quotecast_ws_connections "))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
            .map(|v| v as u64)
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        assert!(std::process::Command::new("kill").args([sig, &pid]).status().unwrap().success());
    }

    /// Waits for the process to exit: its status.
    async fn exited(&mut self, within: Duration) -> std::process::ExitStatus {
        let child = self.child.as_mut().expect("running");
        let status = exited(child, within).await;
        self.child = None;
        status.unwrap_or_else(|| panic!("{} still running {within:?} after the signal", self.name))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Polls `cond` every 20 ms until true, failing after `within`.
async fn until(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(t0.elapsed() < within, "timed out after {within:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Servers of `backend` HAProxy's stats say are UP.
fn lb_up(net: &Net, backend: &'static str) -> Vec<String> {
    let stats = SocketAddr::new(LB.into(), STATS_PORT);
    let csv = net.run_in("lb", move || http_get(stats, "/;csv")).map(|r| r.1).unwrap_or_default();
    csv.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f.len() > 17 && f[0] == backend && f[1].starts_with("gw") && f[17] == "UP")
                .then(|| f[1].to_string())
        })
        .collect()
}

struct Balancer(Child);

impl Drop for Balancer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_balancer(net: &Net, dir: &std::path::Path) -> Balancer {
    let cfg = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/haproxy/haproxy.cfg");
    let log = std::fs::File::create(dir.join("haproxy.log")).unwrap();
    let mut cmd = net.command("lb", "haproxy");
    cmd.args(["-f", cfg, "-db"])
        .env("QC_LB_WS", format!("{LB}:{WS_PORT}"))
        .env("QC_LB_GRPC", format!("{LB}:{GRPC_PORT}"))
        .env("QC_LB_STATS", format!("{LB}:{STATS_PORT}"));
    for i in 0..NODES.len() {
        cmd.env(format!("QC_GW{}_WS", i + 1), format!("{}:{WS_PORT}", node_addr(i)));
        cmd.env(format!("QC_GW{}_GRPC", i + 1), format!("{}:{GRPC_PORT}", node_addr(i)));
    }
    let child =
        cmd.stdout(Stdio::null()).stderr(log).spawn().expect("starting haproxy (apt-get install haproxy)");
    Balancer(child)
}

/// `haproxy -c` accepts the shipped config.
#[test]
fn the_shipped_haproxy_config_is_valid() {
    let cfg = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/haproxy/haproxy.cfg");
    let mut cmd = std::process::Command::new("haproxy");
    cmd.args(["-c", "-f", cfg])
        .env("QC_LB_WS", "127.0.0.1:18080")
        .env("QC_LB_GRPC", "127.0.0.1:18081")
        .env("QC_LB_STATS", "127.0.0.1:18082");
    for i in 1..=3 {
        cmd.env(format!("QC_GW{i}_WS"), format!("127.0.0.1:{}", 28080 + i));
        cmd.env(format!("QC_GW{i}_GRPC"), format!("127.0.0.1:{}", 28090 + i));
    }
    let out = cmd.output().expect("haproxy is needed: run scripts/test.sh (apt-get install haproxy)");
    assert!(
        out.status.success(),
        "haproxy -c: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The whole test network with `n` gateways running (the others' hosts
/// exist, idle), the feed running in its host and HAProxy in front.
struct Fleet {
    // Field order is drop order: processes before the namespaces.
    nodes: Vec<Node>,
    _lb: Balancer,
    feed: Option<std::thread::JoinHandle<anyhow::Result<feed_sim::Report>>>,
    feed_stop: CancellationToken,
    dir: std::path::PathBuf,
    net: Net,
}

impl Fleet {
    /// `None` (after saying why) when namespaces cannot be made here.
    async fn start(n: usize, symbols: usize, rate: u64, node_args: &[&str]) -> Option<Fleet> {
        let mut hosts = vec![("feed", FEED), ("lb", LB), ("cli", Ipv4Addr::new(10, 77, 0, 30))];
        for (i, name) in NODES.iter().enumerate() {
            hosts.push((name, node_addr(i)));
        }
        let net = match Net::new("f", &hosts) {
            Ok(n) => n,
            Err(e) => {
                eprintln!("SKIPPED: cannot build the namespace network (needs root / CAP_SYS_ADMIN): {e}");
                return None;
            }
        };
        let dir = tempdir();
        let args: Vec<String> = node_args.iter().map(|a| (*a).to_string()).collect();
        let nodes: Vec<Node> = (0..n).map(|i| Node::start(&net, i, &dir, args.clone())).collect();
        // The feed, in its own host: multicast out of its veth, TTL 1.
        let feed_stop = CancellationToken::new();
        let sim = SimConfig {
            group: GROUPS.a.0,
            port: GROUPS.a.1,
            line_b_group: Some(GROUPS.b.0),
            line_b_port: Some(GROUPS.b.1),
            snapshot_group: Some(GROUPS.snapshot.0),
            snapshot_port: Some(GROUPS.snapshot.1),
            snapshot_rate: 2_000,
            retrans_addr: Some(SocketAddr::new(FEED.into(), RETRANS_PORT)),
            interface: FEED,
            ttl: 1,
            seed: 31,
            symbols,
            rate,
            ..SimConfig::default()
        };
        let feed = {
            let stop = feed_stop.clone();
            net.spawn_in("feed", move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                rt.block_on(feed_sim::run(sim, stop))
            })
        };
        until("every node ready", Duration::from_secs(15), || nodes.iter().all(|x| x.ready(&net))).await;
        let lb = start_balancer(&net, &dir);
        until("haproxy sees every node up", Duration::from_secs(10), || {
            lb_up(&net, "gateways_ws").len() == n
        })
        .await;
        Some(Fleet { nodes, _lb: lb, feed: Some(feed), feed_stop, dir, net })
    }

    /// loadtest (the library) in the client host, through the balancer,
    /// with `--reconnect` and the truth file this fleet writes at the end.
    fn loadtest(
        &self,
        extra: &[&str],
    ) -> std::thread::JoinHandle<Result<loadtest::RunReport, loadtest::Error>> {
        let mut args: Vec<String> = [
            "loadtest",
            "--ws-addr",
            &format!("{LB}:{WS_PORT}"),
            "--feed",
            "external",
            "--truth-file",
            &self.truth_file().display().to_string(),
            "--reconnect",
            "--drain-timeout",
            "10s",
            "--no-progress",
        ]
        .iter()
        .map(|a| (*a).to_string())
        .collect();
        args.extend(extra.iter().map(|a| (*a).to_string()));
        let cfg = <loadtest::Config as clap::Parser>::parse_from(args);
        let threads = cfg.load.threads.max(1);
        self.net.spawn_in("cli", move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(loadtest::run(cfg, CancellationToken::new()))
        })
    }

    fn truth_file(&self) -> std::path::PathBuf {
        self.dir.join("truth.json")
    }

    /// Open WebSocket connections over every running node.
    fn connections(&self) -> u64 {
        self.nodes.iter().filter(|n| n.child.is_some()).filter_map(|n| n.connections(&self.net)).sum()
    }

    /// Waits until `clients` are connected, failing early if loadtest ended.
    async fn all_connected(
        &self,
        clients: u64,
        load: &std::thread::JoinHandle<Result<loadtest::RunReport, loadtest::Error>>,
    ) {
        let t0 = Instant::now();
        while self.connections() != clients {
            assert!(!load.is_finished(), "loadtest ended before every client connected");
            if t0.elapsed() > Duration::from_secs(30) {
                let metrics: Vec<String> = self
                    .nodes
                    .iter()
                    .map(|n| {
                        n.metrics(&self.net)
                            .lines()
                            .filter(|l| {
                                l.starts_with("quotecast_ws_") && !l.contains("bucket") && !l.ends_with(" 0")
                            })
                            .collect::<Vec<_>>()
                            .join("\n")
                    })
                    .collect();
                panic!(
                    "clients not all connected: {} of {clients}\n{}",
                    self.connections(),
                    metrics.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Ends the session and writes its truth for loadtest.
    fn end_feed(&mut self) -> feed_sim::Report {
        self.feed_stop.cancel();
        let report = self.feed.take().expect("feed running").join().expect("feed thread").expect("feed-sim");
        report.write_truth(&self.truth_file()).unwrap();
        report
    }

    fn logs(&self) -> String {
        NODES
            .iter()
            .map(|n| {
                format!(
                    "--- {n}:\n{}",
                    std::fs::read_to_string(self.dir.join(format!("{n}.log"))).unwrap_or_default()
                )
            })
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_fail_over_and_resume_without_loss_through_kills_late_starts_and_a_rolling_restart() {
    // The ring must cover a failover: the hottest symbol (~300 updates/s
    // here) times the seconds a client may be away (reconnect plus this
    // loaded machine's delivery lag).
    let Some(mut f) = Fleet::start(3, 200, 2_000, &["--replay-depth", "8192"]).await else { return };
    let clients = 300u64;
    let load = f.loadtest(&[
        "--connections",
        "300",
        "--symbols-per-conn",
        "10",
        "--duration",
        "120s",
        "--threads",
        "1",
        "--feed-symbols",
        "200",
    ]);
    f.all_connected(clients, &load).await;

    // 1. A node dies under load: its clients reconnect to the others.
    let victims = f.nodes[0].connections(&f.net).unwrap_or(0);
    assert!(victims > 0, "leastconn gave gw1 no client");
    f.nodes[0].signal("-KILL");
    let _ = f.nodes[0].exited(Duration::from_secs(5)).await;
    until("gw1's clients on gw2 and gw3", Duration::from_secs(15), || f.connections() == clients).await;

    // 2. It comes back mid-session: it rebuilds from the snapshot channel,
    //    becomes ready, and takes new connections.
    f.nodes[0].restart(&f.net);
    until("gw1 ready after its late start", Duration::from_secs(15), || f.nodes[0].ready(&f.net)).await;
    until("haproxy sees gw1 up again", Duration::from_secs(10), || lb_up(&f.net, "gateways_ws").len() == 3)
        .await;

    // 3. Rolling restart: each node drained (SIGTERM), restarted, ready.
    for i in [1usize, 2, 0] {
        f.nodes[i].signal("-TERM");
        let status = f.nodes[i].exited(Duration::from_secs(15)).await;
        assert!(status.success(), "{} exited with {status} after its drain", f.nodes[i].name);
        until("the drained node's clients elsewhere", Duration::from_secs(15), || f.connections() == clients)
            .await;
        f.nodes[i].restart(&f.net);
        until("the restarted node ready", Duration::from_secs(15), || f.nodes[i].ready(&f.net)).await;
        until("haproxy sees it up", Duration::from_secs(10), || lb_up(&f.net, "gateways_ws").len() == 3)
            .await;
    }

    // gRPC through the balancer (HTTP/2; leastconn picks a node per
    // connection, so a new channel each time): served, and by nodes that
    // agree on the epoch.
    let lb_grpc = format!("http://{LB}:{GRPC_PORT}");
    let through_lb =
        f.net.run_in("cli", move || (0..6).map(|_| snapshot_via(lb_grpc.clone())).collect::<Vec<_>>());
    let mut epochs = std::collections::BTreeSet::new();
    for snap in through_lb {
        let snap = snap.expect("GetSnapshot through haproxy");
        assert_eq!(snap.quotes.len(), 200, "every symbol through the balancer");
        epochs.extend(snap.quotes.iter().map(|q| q.epoch.clone()));
    }
    assert_eq!(epochs.len(), 1, "nodes disagree on the epoch: {epochs:?}");

    // The session ends; loadtest checks every stream against the truth.
    let report = f.end_feed();
    let run = load.join().expect("loadtest thread").expect("loadtest run");
    // After the session every node holds the simulator's final state, and
    // the same (epoch, seq): whichever node a client lands on, it resumes.
    let epoch = report.session.to_string();
    for (i, n) in NODES.iter().enumerate() {
        let addr = format!("http://{}:{GRPC_PORT}", node_addr(i));
        let snap = f.net.run_in(n, move || snapshot_via(addr)).expect("GetSnapshot of a node");
        assert_eq!(snap.quotes.len(), report.last.len(), "{n}: a page holds every symbol");
        for q in &snap.quotes {
            let t = &report.last[&q.symbol];
            let want = (epoch.as_str(), u64::from(t.symbol_seq), t.bid_px, t.ask_px, t.last_px);
            assert_eq!((q.epoch.as_str(), q.seq, q.bid_px, q.ask_px, q.last_px), want, "{n} {}", q.symbol);
        }
    }
    let c = &run.correctness;
    let text = format!("{run}");
    assert_eq!(c.violations, 0, "violations:\n{text}\n{}", f.logs());
    assert_eq!(c.drained, Some(true), "not every client saw the end of the feed:\n{text}");
    let fv = c.final_values.expect("final values checked against the truth");
    assert!(fv.verified > 0 && fv.unverifiable == 0, "{fv:?}\n{text}");
    let t = &c.totals;
    assert_eq!(t.received + t.skipped, t.seq_span, "not every update accounted for:\n{text}");
    assert_eq!(t.feed_gap_notices, 0, "a gateway lost feed data:\n{text}");
    let reconnects: u64 = run.connections.reconnects.values().sum();
    assert!(reconnects >= victims + 2, "too few reconnects ({reconnects}):\n{text}");
    assert!(
        run.connections.reconnects.keys().any(|k| k.starts_with("1012")),
        "no drain close (1012) seen:\n{text}"
    );
    assert!(
        !run.connections.reconnects.keys().any(|k| k.starts_with("1001")),
        "a drained client was told 1001, not 1012:\n{text}"
    );
    assert!(t.resumed > 0, "no stream resumed:\n{text}");
    assert_eq!(t.resume_failed, 0, "a resume fell back to a snapshot:\n{text}");
    let nodes_seen: Vec<&String> = run.connections.nodes.keys().collect();
    assert_eq!(nodes_seen, ["gw1", "gw2", "gw3"], "{text}");
    eprintln!("{text}");
}

/// A number from the environment, else `default`.
fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Benchmark (scripts/bench-fleet.sh runs it in release mode): delivered
/// updates/s through the balancer with QC_BENCH_NODES gateways, and with
/// QC_BENCH_KILL=1 the failover time when one node is SIGKILLed mid-run.
/// Prints one `FLEET_BENCH {json}` line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: scripts/bench-fleet.sh"]
async fn fleet_bench() {
    let n = env_num("QC_BENCH_NODES", 3) as usize;
    let clients = env_num("QC_BENCH_CLIENTS", 1000);
    let per_conn = env_num("QC_BENCH_SYMBOLS_PER_CONN", 10);
    let rate = env_num("QC_BENCH_RATE", 5_000);
    let secs = env_num("QC_BENCH_SECS", 20);
    let kill = env_num("QC_BENCH_KILL", 0) == 1;
    let depth = env_num("QC_BENCH_REPLAY_DEPTH", 4096).to_string();
    let Some(mut f) = Fleet::start(n, 300, rate, &["--replay-depth", &depth]).await else { return };
    let (c, p, d) = (clients.to_string(), per_conn.to_string(), format!("{}s", secs * 3));
    let load = f.loadtest(&[
        "--connections",
        &c,
        "--symbols-per-conn",
        &p,
        "--duration",
        &d,
        "--threads",
        "1",
        "--feed-symbols",
        "300",
        "--connect-rate",
        "2000",
    ]);
    f.all_connected(clients, &load).await;
    tokio::time::sleep(Duration::from_secs(secs / 2)).await;
    let mut victims = 0;
    if kill && n > 1 {
        victims = f.nodes[0].connections(&f.net).unwrap_or(0);
        f.nodes[0].signal("-KILL");
        let _ = f.nodes[0].exited(Duration::from_secs(5)).await;
        until("the victims elsewhere", Duration::from_secs(30), || f.connections() == clients).await;
    }
    tokio::time::sleep(Duration::from_secs(secs - secs / 2)).await;
    f.end_feed();
    let run = load.join().expect("loadtest thread").expect("loadtest run");
    let nodes: serde_json::Map<String, serde_json::Value> = run
        .connections
        .nodes
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::json!({"connections": v.connections, "updates": v.updates})))
        .collect();
    let out = serde_json::json!({
        "nodes": n,
        "clients": clients,
        "symbols_per_conn": per_conn,
        "feed_rate": rate,
        "updates_per_sec": run.fast.updates_per_sec,
        "e2e_p50_us": run.fast.latency.end_to_end.p50_us,
        "e2e_p99_us": run.fast.latency.end_to_end.p99_us,
        "violations": run.correctness.violations,
        "resume_failed": run.correctness.totals.resume_failed,
        "resumed": run.correctness.totals.resumed,
        "killed_node_clients": victims,
        "failover_p50_us": run.connections.failover_time.p50_us,
        "failover_p99_us": run.connections.failover_time.p99_us,
        "failover_max_us": run.connections.failover_time.max_us,
        "per_node": nodes,
        "machine_busy": run.cpu.machine_busy,
    });
    println!("FLEET_BENCH {out}");
    eprintln!("{run}");
}

/// One all-symbols GetSnapshot page from `addr` (a node or the balancer),
/// on a new channel.
fn snapshot_via(addr: String) -> Result<quotecast_proto::v1::GetSnapshotResponse, String> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async move {
        let mut c = quotecast_proto::v1::quote_service_client::QuoteServiceClient::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        let req = quotecast_proto::v1::GetSnapshotRequest { page_size: 500, ..Default::default() };
        c.get_snapshot(req).await.map(tonic::Response::into_inner).map_err(|e| e.to_string())
    })
}

fn tempdir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("quotecast-fleet-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}
