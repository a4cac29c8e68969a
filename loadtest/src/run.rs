//! The controller: checks the target, starts the feed, ramps clients up,
//! opens and closes the measurement window, ends the feed, waits for the
//! clients to drain, and collects everything into a [`RunReport`].

use crate::client::{self, CallerSpec, ConnSpec, Job, Shared, Worker};
use crate::config::{Config, FeedSource, Mode};
use crate::report::{Measured, RunReport};
use crate::symbols::Picker;
use crate::sys::{self, CpuSample};
use crate::Error;
use futures_util::{SinkExt, StreamExt};
use prost::Message as _;
use quotecast_proto::v1::{self, server_message::Body};
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

/// How long the gateway gets to learn the feed's symbol directory.
const SYMBOL_WAIT: Duration = Duration::from_secs(5);

/// Runs one load test as `cfg` says, until it is done or `shutdown` is
/// cancelled (then it ends early and still reports).
///
/// Client threads are started here; the controller itself runs on the
/// caller's runtime (any flavour), which also runs the in-process feed.
///
/// # Errors
/// [`Error::Config`] for settings that cannot work (exit 64), the other
/// variants for failures while running (exit 1). Correctness violations and
/// missed thresholds are not errors: they are in the report.
pub async fn run(cfg: Config, shutdown: CancellationToken) -> Result<RunReport, Error> {
    cfg.validate()?;
    let limit =
        sys::raise_nofile().map_err(|source| Error::Io { what: "raising the open-file limit", source })?;
    let clients = match cfg.mode {
        Mode::Ws | Mode::Stream => cfg.load.connections,
        Mode::Snapshot => cfg.load.concurrency,
    };
    let max = limit.saturating_sub(sys::FD_RESERVE) as usize;
    if clients > max {
        return Err(crate::config::ConfigError::TooManyConnections { want: clients, max, limit }.into());
    }
    let ws_target = cfg.ws_target()?;
    let grpc_target = cfg.grpc_target()?;
    let picker = Picker::new(&cfg);
    let dial = client::Dialer::new(ws_target, &cfg.target).map_err(Error::Tls)?;

    // Reachability first, so a wrong address is one clear line.
    if cfg.mode == Mode::Ws || cfg.feed.feed == FeedSource::Sim {
        tokio::net::TcpStream::connect(ws_target).await.map_err(|e| Error::Unreachable {
            what: "WebSocket",
            addr: ws_target,
            reason: client::io_reason(&e),
        })?;
    }
    if cfg.mode != Mode::Ws {
        client::grpc_channel(grpc_target, client::source_for(grpc_target, 0, 1), cfg.load.connect_timeout)
            .await
            .map_err(|reason| Error::Unreachable { what: "gRPC", addr: grpc_target, reason })?;
    }

    // The feed, and the gateway learning its symbols.
    let feed_stop = CancellationToken::new();
    let mut feed = match cfg.feed.feed {
        FeedSource::Sim => Some(tokio::spawn(feed_sim::run(cfg.sim_config(0), feed_stop.clone()))),
        FeedSource::External => None,
    };
    // (With an external feed and gRPC clients there may be no WebSocket
    // listener to ask; the gRPC clients' rejections tell instead.)
    let known = if cfg.mode == Mode::Ws || cfg.feed.feed == FeedSource::Sim {
        wait_for_symbols(ws_target, &dial, &picker.probe(), &mut feed, &shutdown).await
    } else {
        Ok(())
    };
    if let Err(e) = known {
        feed_stop.cancel();
        if let Some(f) = feed.take() {
            let _ = f.await;
        }
        return Err(e);
    }

    let threads = if cfg.load.threads == 0 { sys::cores() } else { cfg.load.threads };
    let shared = Arc::new(Shared::new(threads, ws_target, grpc_target, dial, &cfg));
    let mut workers = Vec::with_capacity(threads);
    for i in 0..threads {
        workers.push(
            Worker::start(i, shared.clone())
                .map_err(|source| Error::Io { what: "starting a client thread", source })?,
        );
    }
    let progress = Progress::start(&cfg, shared.clone());

    // Ramp-up.
    let t_start = Instant::now();
    let slow = (clients as f64 * cfg.load.slow_share).round() as usize;
    let mut picker = picker;
    let per_caller = (cfg.load.call_rate > 0.0)
        .then(|| Duration::from_secs_f64(cfg.load.concurrency as f64 / cfg.load.call_rate));
    let gap = (cfg.load.connect_rate > 0.0).then(|| Duration::from_secs_f64(1.0 / cfg.load.connect_rate));
    for i in 0..clients {
        if shutdown.is_cancelled() {
            break;
        }
        if let Some(gap) = gap {
            // Absolute schedule: no drift from sleep overshoot.
            let at = t_start + gap.mul_f64(i as f64);
            tokio::time::sleep_until(at.into()).await;
        }
        // Slow clients spread evenly over the connect order.
        let is_slow = (i + 1) * slow / clients > i * slow / clients;
        let source = client::source_for(
            if cfg.mode == Mode::Ws { ws_target } else { grpc_target },
            i,
            cfg.load.source_ips,
        );
        let job = match cfg.mode {
            Mode::Ws | Mode::Stream => {
                let spec = ConnSpec {
                    id: i as u64,
                    symbols: picker.pick(cfg.load.symbols_per_conn),
                    slow: is_slow,
                    source,
                };
                if cfg.mode == Mode::Ws {
                    Job::Ws(spec)
                } else {
                    Job::Stream(spec)
                }
            }
            Mode::Snapshot => Job::Snapshot(CallerSpec {
                id: i as u64,
                picker: Picker::with(
                    crate::symbols::universe(cfg.feed.feed_symbols),
                    (!cfg.load.symbols.is_empty()).then(|| cfg.load.symbols.clone()),
                    cfg.load.pick,
                    cfg.load.seed.wrapping_add(i as u64),
                ),
                per_call: cfg.load.symbols_per_call,
                interval: per_caller,
                source,
            }),
        };
        let _ = workers[i % threads].jobs.send(job).await;
    }
    // Wait until every attempt has resolved (or the connect timeout passed).
    let ramp_deadline = Instant::now() + cfg.load.connect_timeout + Duration::from_secs(1);
    while shared.total(|c| &c.connected) + shared.total(|c| &c.failed) < clients as u64
        && Instant::now() < ramp_deadline
        && !shutdown.is_cancelled()
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let ramp_secs = t_start.elapsed().as_secs_f64();
    if shared.total(|c| &c.connected) == 0 {
        shared.stop.cancel();
        feed_stop.cancel();
        for w in workers {
            let _ = w.finish().await;
        }
        if let Some(f) = feed {
            let _ = f.await;
        }
        progress.finish();
        return Err(Error::NoClient { addr: if cfg.mode == Mode::Ws { ws_target } else { grpc_target } });
    }

    // Measurement window.
    let tids = shared.tids.lock().map(|t| t.clone()).unwrap_or_default();
    let pid = cfg.target.gateway_pid;
    progress.phase("measuring");
    let base = shared.total(|c| if cfg.mode == Mode::Snapshot { &c.calls } else { &c.updates });
    let cpu0 = CpuSample::take(&tids, pid);
    let t0 = Instant::now();
    shared.measuring.store(true, Ordering::Relaxed);
    loop {
        if t0.elapsed() >= cfg.load.duration || shutdown.is_cancelled() {
            break;
        }
        if let Some(n) = cfg.load.updates {
            let now = shared.total(|c| if cfg.mode == Mode::Snapshot { &c.calls } else { &c.updates });
            if now - base >= n {
                break;
            }
        }
        if feed.as_ref().is_some_and(tokio::task::JoinHandle::is_finished) {
            break;
        }
        if cfg.feed.truth_file.as_ref().is_some_and(|p| p.exists()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    shared.measuring.store(false, Ordering::Relaxed);
    let window_secs = t0.elapsed().as_secs_f64();
    let cpu = cpu0.until(&CpuSample::take(&tids, pid));
    let gateway_rss_bytes = pid.and_then(sys::pid_rss_bytes);

    // End the feed and let every normal client receive its tail.
    let mut feed_report = None;
    let mut drained = None;
    let mut drain_secs = 0.0;
    if let Some(f) = feed.take() {
        progress.phase("draining");
        feed_stop.cancel();
        let report = f
            .await
            .map_err(|e| Error::Feed(format!("feed thread failed: {e}")))?
            .map_err(|e| Error::Feed(format!("{e:#}")))?;
        feed_report = Some(report);
        if cfg.mode != Mode::Snapshot {
            (drained, drain_secs) = drain(&cfg, &shared, &shutdown).await;
        }
    }
    let mut truth = None;
    if let Some(path) = cfg.feed.truth_file.as_ref().filter(|p| p.exists()) {
        let text = std::fs::read_to_string(path)
            .map_err(|source| Error::Io { what: "reading --truth-file", source })?;
        truth = Some(
            feed_sim::Report::parse_truth(&text)
                .map_err(|e| Error::Feed(format!("--truth-file {}: {e}", path.display())))?,
        );
        if cfg.mode != Mode::Snapshot {
            progress.phase("draining");
            (drained, drain_secs) = drain(&cfg, &shared, &shutdown).await;
        }
    }

    progress.phase("closing");
    shared.stop.cancel();
    let mut results = Vec::with_capacity(threads);
    let mut lost = 0;
    for w in workers {
        match w.finish().await {
            Some(r) => results.push(r),
            None => lost += 1,
        }
    }
    progress.finish();
    if lost > 0 {
        return Err(Error::Io {
            what: "collecting results",
            source: std::io::Error::other(format!("{lost} client thread(s) failed")),
        });
    }
    let measured = Measured {
        workers: results,
        ramp_secs,
        window_secs,
        threads,
        requested: clients,
        slow,
        feed: feed_report,
        truth,
        drained,
        drain_secs,
        cpu,
        gateway_rss_bytes,
    };
    Ok(RunReport::build(&cfg, measured))
}

/// Waits for every normal client to receive the end of the feed: as long
/// as frames keep arriving (a backlogged gateway may still be delivering
/// the feed's tail), giving up only after `--drain-timeout` without any (or
/// 12 times that in all). Returns whether all drained, and the seconds it
/// took.
async fn drain(cfg: &Config, shared: &Shared, shutdown: &CancellationToken) -> (Option<bool>, f64) {
    let t_drain = Instant::now();
    let cap = t_drain + cfg.load.drain_timeout * 12;
    let mut deadline = t_drain + cfg.load.drain_timeout;
    let mut frames = shared.total(|c| &c.frames);
    let mut quiet_since: Option<Instant> = None;
    let drained = loop {
        let now_frames = shared.total(|c| &c.frames);
        if now_frames != frames {
            frames = now_frames;
            deadline = (Instant::now() + cfg.load.drain_timeout).min(cap);
        }
        if shared.undrained.load(Ordering::Relaxed) <= 0 {
            // Stay drained a moment: a late update would undo it.
            let q = *quiet_since.get_or_insert_with(Instant::now);
            if q.elapsed() >= Duration::from_millis(100) {
                break true;
            }
        } else {
            quiet_since = None;
        }
        if Instant::now() >= deadline || shutdown.is_cancelled() {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    (Some(drained), t_drain.elapsed().as_secs_f64())
}

/// Subscribes a probe connection to `probe` until the gateway accepts every
/// symbol: the in-process feed's directory has then arrived.
async fn wait_for_symbols(
    target: SocketAddr,
    dial: &client::Dialer,
    probe: &[String],
    feed: &mut Option<tokio::task::JoinHandle<anyhow::Result<feed_sim::Report>>>,
    shutdown: &CancellationToken,
) -> Result<(), Error> {
    let unreachable = |reason| Error::Unreachable { what: "WebSocket", addr: target, reason };
    let (mut ws, _node) = client::ws_connect(target, dial, client::source_for(target, 0, 1), 64 * 1024)
        .await
        .map_err(unreachable)?;
    let deadline = Instant::now() + SYMBOL_WAIT;
    loop {
        if let Some(f) = feed.as_mut().filter(|f| f.is_finished()) {
            // The feed died (bad socket, ...): say why.
            let r = f.await;
            *feed = None;
            return Err(Error::Feed(match r {
                Ok(Ok(_)) => "feed-sim ended before the gateway knew its symbols".into(),
                Ok(Err(e)) => format!("{e:#}"),
                Err(e) => e.to_string(),
            }));
        }
        ws.send(client::subscribe_message(probe)).await.map_err(|e| unreachable(e.to_string()))?;
        let rejected = loop {
            let m = tokio::time::timeout(Duration::from_secs(2), ws.next()).await;
            match m {
                Ok(Some(Ok(Message::Binary(b)))) => {
                    if let Ok(v1::ServerMessage { body: Some(Body::Ack(a)) }) =
                        v1::ServerMessage::decode(&b[..])
                    {
                        break a.rejected;
                    }
                }
                Ok(Some(Ok(Message::Close(f)))) => {
                    let why = f.map(|f| format!("{} {}", f.code, f.reason)).unwrap_or_default();
                    return Err(unreachable(format!("gateway closed the probe connection: {why}")));
                }
                Ok(Some(Ok(_))) => {}
                Ok(Some(Err(e))) => return Err(unreachable(e.to_string())),
                Ok(None) => return Err(unreachable("connection closed".into())),
                Err(_) => return Err(unreachable("no reply to a subscribe within 2 s".into())),
            }
        };
        if rejected.is_empty() {
            let _ = ws.close(None).await;
            return Ok(());
        }
        if Instant::now() >= deadline || shutdown.is_cancelled() {
            let names: Vec<String> =
                rejected.iter().map(|r| format!("{} ({})", r.symbol, r.reason)).collect();
            return Err(Error::SymbolsUnknown { symbols: names.join(", ") });
        }
        // The gateway allows 20 requests/s per connection.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The live progress line (only on a terminal).
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    task: Option<tokio::task::JoinHandle<()>>,
    phase: Arc<std::sync::Mutex<&'static str>>,
}

impl Progress {
    fn start(cfg: &Config, shared: Arc<Shared>) -> Progress {
        let phase = Arc::new(std::sync::Mutex::new("ramp-up"));
        if cfg.output.no_progress || !std::io::stderr().is_terminal() {
            return Progress { bar: None, task: None, phase };
        }
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        let b = bar.clone();
        let ph = phase.clone();
        let snapshot = cfg.mode == Mode::Snapshot;
        let task = tokio::spawn(async move {
            let mut last = (Instant::now(), 0u64);
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tick.tick().await;
                let n = shared.total(|c| if snapshot { &c.calls } else { &c.updates });
                let dt = last.0.elapsed().as_secs_f64().max(1e-3);
                let rate = (n - last.1) as f64 / dt;
                last = (Instant::now(), n);
                let p99 = shared.progress_histogram();
                let p99 = if p99.is_empty() {
                    "-".to_string()
                } else {
                    crate::report::fmt_us(p99.value_at_quantile(0.99) as f64 / 1000.0)
                };
                let phase = ph.lock().map(|p| *p).unwrap_or("");
                b.set_message(format!(
                    "{phase}: {} open, {} failed, {:.0} {}/s, p99 {p99}",
                    shared.open(),
                    shared.total(|c| &c.failed),
                    rate,
                    if snapshot { "calls" } else { "updates" }
                ));
                b.tick();
            }
        });
        Progress { bar: Some(bar), task: Some(task), phase }
    }

    fn phase(&self, p: &'static str) {
        if let Ok(mut g) = self.phase.lock() {
            *g = p;
        }
    }

    fn finish(&self) {
        if let Some(t) = &self.task {
            t.abort();
        }
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
