//! The dashboards and alert rules in `dashboards/` proven on a real
//! Prometheus: the dashboard JSON is checked for structure, promtool checks
//! the config and rules and runs the rule unit tests, and a Prometheus
//! scraping a gateway fed by feed-sim (with clients, a slow consumer,
//! faults, gap fill and gRPC calls) must return data for every panel query
//! and every alert measure.
//!
//! Needs Debian's `prometheus` package (prometheus + promtool): the tests
//! fail, naming the install command, when it is missing.

mod common;
mod metrics_util;

use common::*;
use futures_util::{SinkExt, StreamExt};
use metrics_util::{dashboards_dir, free_port, http_get, promtool, Prometheus};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

fn dashboard_files() -> Vec<(String, Value)> {
    let dir = dashboards_dir().join("grafana/dashboards");
    let mut out = Vec::new();
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "json") {
            let text = std::fs::read_to_string(&p).unwrap();
            let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            out.push((p.file_name().unwrap().to_string_lossy().into_owned(), v));
        }
    }
    assert!(!out.is_empty(), "no dashboard JSON in {}", dir.display());
    out
}

/// Every panel, rows' nested panels included (rows themselves excluded).
fn panels(dash: &Value) -> Vec<&Value> {
    fn walk<'a>(list: &'a Value, out: &mut Vec<&'a Value>) {
        for p in list.as_array().into_iter().flatten() {
            if p["type"] == "row" {
                walk(&p["panels"], out);
            } else {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    walk(&dash["panels"], &mut out);
    out
}

/// Every `datasource` value in the document.
fn datasource_refs<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if k == "datasource" {
                    out.push(x);
                } else {
                    datasource_refs(x, out);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| datasource_refs(x, out)),
        _ => {}
    }
}

/// Units of Grafana's unit picker this repository uses (a typo would show
/// raw numbers).
const KNOWN_UNITS: [&str; 12] =
    ["none", "short", "s", "ms", "µs", "dtdurations", "percentunit", "bytes", "Bps", "pps", "cps", "reqps"];

#[test]
fn dashboard_json_structure() {
    for (file, d) in dashboard_files() {
        assert!(d["schemaVersion"].as_u64().unwrap() >= 36, "{file}: schemaVersion from current Grafana");
        assert!(d["uid"].as_str().is_some_and(|u| !u.is_empty()), "{file}: dashboard uid");
        let vars = d["templating"]["list"].as_array().expect("templating.list");
        let ds = vars.iter().find(|v| v["name"] == "datasource").expect("a `datasource` variable");
        assert_eq!(ds["type"], "datasource", "{file}");
        assert_eq!(ds["query"], "prometheus", "{file}");
        // No datasource is referenced by a hard-coded UID (or by name)
        // anywhere: every `datasource` is the variable, or Grafana's own
        // annotation source.
        let mut refs = Vec::new();
        datasource_refs(&d, &mut refs);
        for r in &refs {
            let ok = r["uid"] == "${datasource}" || r["uid"] == "-- Grafana --" && r["type"] == "grafana";
            assert!(ok, "{file}: hard-coded datasource {r}");
        }
        assert!(refs.len() > 20, "{file}: datasource references found: {}", refs.len());
        for v in vars.iter().filter(|v| v["type"] == "query") {
            assert_eq!(v["datasource"]["uid"], "${datasource}", "{file}: variable {}", v["name"]);
        }

        let ps = panels(&d);
        assert!(ps.len() >= 20, "{file}: an overview and detail rows");
        let mut ids = BTreeSet::new();
        for p in &ps {
            let title = p["title"].as_str().unwrap_or_default();
            assert!(!title.is_empty(), "{file}: a panel without a title");
            assert!(ids.insert(p["id"].as_u64().expect("panel id")), "{file}: duplicate id in {title}");
            assert_eq!(p["datasource"]["uid"], "${datasource}", "{file}: {title}: datasource variable");
            assert_eq!(p["datasource"]["type"], "prometheus", "{file}: {title}");
            let unit = p["fieldConfig"]["defaults"]["unit"].as_str().unwrap_or_default();
            assert!(KNOWN_UNITS.contains(&unit), "{file}: {title}: unit {unit:?}");
            assert!(p["description"].as_str().is_some_and(|s| !s.is_empty()), "{file}: {title}: description");
            for k in ["h", "w", "x", "y"] {
                assert!(p["gridPos"][k].is_u64(), "{file}: {title}: gridPos.{k}");
            }
            let targets = p["targets"].as_array().filter(|t| !t.is_empty());
            let targets = targets.unwrap_or_else(|| panic!("{file}: {title}: no query"));
            let mut refs = BTreeSet::new();
            for t in targets {
                assert!(
                    t["expr"].as_str().is_some_and(|e| !e.trim().is_empty()),
                    "{file}: {title}: empty expr"
                );
                assert_eq!(t["datasource"]["uid"], "${datasource}", "{file}: {title}: target datasource");
                assert!(refs.insert(t["refId"].as_str().unwrap()), "{file}: {title}: duplicate refId");
            }
        }
        // The overview comes first: the first row holds the desk view.
        let first = &d["panels"][0];
        assert_eq!(first["type"], "row");
        assert_eq!(first["title"], "Overview");
    }
}

#[test]
fn promtool_checks_config_rules_and_rule_unit_tests() {
    let dir = dashboards_dir().join("prometheus");
    for args in [
        &["check", "config", "prometheus.yml"][..],
        &["check", "config", "prometheus-fleet.yml"][..],
        &["check", "rules", "alerts.yml"][..],
        &["check", "rules", "fleet_alerts.yml"][..],
        &["test", "rules", "alerts_test.yml"][..],
        &["test", "rules", "fleet_alerts_test.yml"][..],
    ] {
        let (ok, out) = promtool(&dir, args);
        assert!(ok, "promtool {} failed:\n{out}", args.join(" "));
    }
    // Every alert has a unit test.
    for (rules, tests, least) in
        [("alerts.yml", "alerts_test.yml", 5), ("fleet_alerts.yml", "fleet_alerts_test.yml", 1)]
    {
        let rules = std::fs::read_to_string(dir.join(rules)).unwrap();
        let tests = std::fs::read_to_string(dir.join(tests)).unwrap();
        let alerts: Vec<&str> =
            rules.lines().filter_map(|l| l.trim().strip_prefix("- alert: ")).map(str::trim).collect();
        assert!(alerts.len() >= least);
        for a in alerts {
            assert!(tests.contains(&format!("alertname: {a}")), "alert {a} has no promtool unit test");
        }
    }
    // The fleet example scrapes several gateways under the job name the
    // dashboard's Fleet row and the fleet alerts select on.
    let fleet = std::fs::read_to_string(dir.join("prometheus-fleet.yml")).unwrap();
    let job = fleet.split("- job_name: quotecast-gateway").nth(1).expect("quotecast-gateway job");
    let job = job.split("- job_name:").next().unwrap();
    let targets = job.lines().filter(|l| l.trim_start().starts_with("- \"") && l.contains(":8084")).count();
    assert!(targets >= 3, "prometheus-fleet.yml: {targets} gateway targets");
}

/// Replaces Grafana's template variables the way Grafana would for this
/// dashboard (one gateway selected, rate windows covering the whole run).
fn substitute(expr: &str, instance: &str) -> String {
    let e = expr
        .replace("$__rate_interval", "1m")
        .replace("$__interval", "5s")
        .replace("$__range", "1h")
        .replace("${instance}", instance)
        .replace("$instance", instance);
    assert!(!e.contains('$'), "unknown template variable in {expr}");
    e
}

/// Names of quotecast and feed-sim series an expression reads.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut cur = String::new();
    for c in expr.chars().chain(std::iter::once(' ')) {
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            cur.push(c);
        } else {
            if cur.starts_with("quotecast_") || cur.starts_with("feedsim_") {
                out.insert(cur.clone());
            }
            cur.clear();
        }
    }
    out
}

/// Splits "<measure> <op> <threshold>" at its top-level comparison.
fn split_comparison(q: &str) -> Option<(&str, &str)> {
    let b = q.as_bytes();
    let (mut depth, mut quote) = (0i32, None::<u8>);
    let mut found = None;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if let Some(qc) = quote {
            if c == b'\\' {
                i += 1;
            } else if c == qc {
                quote = None;
            }
        } else {
            match c {
                b'"' | b'\'' | b'`' => quote = Some(c),
                b'(' | b'{' | b'[' => depth += 1,
                b')' | b'}' | b']' => depth -= 1,
                b'>' | b'<' | b'=' | b'!' if depth == 0 => {
                    let two = b.get(i + 1) == Some(&b'=');
                    // A lone `=` or `!` is not a comparison (`=~` and `!~`
                    // only appear inside braces anyway).
                    if two || matches!(c, b'>' | b'<') {
                        found = Some((i, if two { 2 } else { 1 }));
                        i += usize::from(two);
                    }
                }
                _ => {}
            }
        }
        i += 1;
    }
    let (at, len) = found?;
    Some((q[..at].trim(), q[at + len..].trim()))
}

#[test]
fn comparison_split_handles_matchers_and_nesting() {
    assert_eq!(split_comparison("up{job=\"a\"} == 0"), Some(("up{job=\"a\"}", "0")));
    assert_eq!(split_comparison("max(a / (b > 0)) > 0.05"), Some(("max(a / (b > 0))", "0.05")));
    assert_eq!(split_comparison("x{code!=\"OK\",le=~\"1\"} >= 2"), Some(("x{code!=\"OK\",le=~\"1\"}", "2")));
    assert_eq!(split_comparison("sum(rate(x[5m]))"), None);
    assert_eq!(metric_names("sum(rate(quotecast_a_total{x=\"y\"}[1m])) / feedsim_b"), {
        ["feedsim_b", "quotecast_a_total"].iter().map(|s| s.to_string()).collect::<BTreeSet<_>>()
    });
}

/// WebSocket traffic while the feed runs: a fast reader, a slow reader
/// (conflated, then closed as slow) and a client that never reads.
async fn ws_traffic(
    gw: &Gw,
    symbols: Vec<String>,
    stop: CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
    let subscribe = json!({"op":"subscribe","symbols":symbols});
    let mut fast = Client::connect(&gw.ws_url("")).await;
    fast.send_json(subscribe.clone()).await;
    // One request the gateway cannot parse (the Errors panel).
    fast.ws.send(Message::text("not json")).await.unwrap();
    let mut slow = Client::connect_small_buffer(&gw.ws_url(""), gw.running.ws_addr).await;
    slow.send_json(subscribe.clone()).await;
    let mut stopped = Client::connect_small_buffer(&gw.ws_url(""), gw.running.ws_addr).await;
    stopped.send_json(subscribe).await;
    let fast_task = tokio::spawn({
        let stop = stop.clone();
        async move {
            while !stop.is_cancelled() {
                tokio::select! {
                    m = fast.ws.next() => if !matches!(m, Some(Ok(_))) { break },
                    _ = stop.cancelled() => {}
                }
            }
        }
    });
    let slow_task = tokio::spawn({
        let stop = stop.clone();
        async move {
            while !stop.is_cancelled() {
                tokio::time::sleep(Duration::from_millis(5)).await;
                if !matches!(slow.ws.next().await, Some(Ok(_))) {
                    break;
                }
            }
        }
    });
    let stopped_task = tokio::spawn(async move {
        stop.cancelled().await;
        drop(stopped);
    });
    vec![fast_task, slow_task, stopped_task]
}

/// gRPC calls to the gateway until `stop`: snapshots (OK), an invalid
/// symbol (INVALID_ARGUMENT), symbol lists, and one stream kept open
/// (in flight) that ends CANCELLED when the client goes.
async fn grpc_traffic(
    addr: SocketAddr,
    symbol: String,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    use quotecast_proto::v1::{
        quote_service_client::QuoteServiceClient, GetSnapshotRequest, ListSymbolsRequest, StreamQuotesRequest,
    };
    let mut client = QuoteServiceClient::connect(format!("http://{addr}")).await.unwrap();
    tokio::spawn(async move {
        let stream =
            client.stream_quotes(StreamQuotesRequest { symbols: vec![symbol.clone()] }).await.unwrap();
        while !stop.is_cancelled() {
            let ok = client
                .get_snapshot(GetSnapshotRequest { symbols: vec![symbol.clone()], ..Default::default() });
            assert!(ok.await.is_ok());
            let bad = client
                .get_snapshot(GetSnapshotRequest { symbols: vec!["bad sym!".into()], ..Default::default() });
            assert_eq!(bad.await.unwrap_err().code(), tonic::Code::InvalidArgument);
            assert!(client.list_symbols(ListSymbolsRequest {}).await.is_ok());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        drop(stream);
    })
}

/// What one pass over every panel query and alert rule found.
struct QueryResults {
    failures: Vec<String>,
    checked: usize,
    alerts: usize,
    groups: Value,
    active: Value,
    gap_alert: Option<Value>,
}

/// Evaluates every dashboard panel query and every alert measure on `prom`
/// now, for the gateway scraped at `instance`.
async fn evaluate_everything(prom: &Prometheus, instance: &str) -> QueryResults {
    let names: BTreeSet<String> = prom
        .api("/api/v1/label/__name__/values")
        .await
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let mut failures = Vec::new();
    let mut checked = 0;
    for (file, d) in dashboard_files() {
        for p in panels(&d) {
            for t in p["targets"].as_array().unwrap() {
                let expr = substitute(t["expr"].as_str().unwrap(), instance);
                let what = format!("{file}: panel {:?} {}: {expr}", p["title"], t["refId"]);
                for n in metric_names(&expr).difference(&names) {
                    failures.push(format!("{what}\n    metric {n} does not exist"));
                }
                match prom.query(&expr).await {
                    Err(e) => failures.push(format!("{what}\n    query failed: {e}")),
                    Ok(r) if r.is_empty() => failures.push(format!("{what}\n    no data")),
                    Ok(r) if !r.iter().any(|(_, v)| v.is_finite()) => {
                        failures.push(format!("{what}\n    only NaN/Inf: {r:?}"))
                    }
                    Ok(_) => {}
                }
                checked += 1;
            }
        }
    }

    // Alert rules: loaded and healthy in this Prometheus, and each measure
    // (the expression without its threshold) has data.
    let groups = prom.api("/api/v1/rules").await.unwrap();
    let mut alerts = 0;
    for g in groups["groups"].as_array().unwrap() {
        for r in g["rules"].as_array().unwrap() {
            let name = r["name"].as_str().unwrap();
            if r["health"] != "ok" {
                failures.push(format!("rule {name}: health {} {}", r["health"], r["lastError"]));
            }
            let q = r["query"].as_str().unwrap();
            let Some((measure, threshold)) = split_comparison(q) else {
                failures.push(format!("rule {name}: not `<measure> <op> <threshold>`: {q}"));
                continue;
            };
            assert!(threshold.parse::<f64>().is_ok(), "rule {name}: threshold {threshold:?}");
            for n in metric_names(measure).difference(&names) {
                failures.push(format!("rule {name}: metric {n} does not exist"));
            }
            match prom.query(measure).await {
                Ok(v) if v.iter().any(|(_, x)| x.is_finite()) => {}
                other => failures.push(format!("rule {name}: measure {measure} returned {other:?}")),
            }
            alerts += 1;
        }
    }
    let active = prom.api("/api/v1/alerts").await.unwrap();
    let gap_alert = active["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["labels"]["alertname"] == "QuotecastFeedGapRate" && a["labels"]["instance"] == instance)
        .cloned();
    QueryResults { failures, checked, alerts, groups, active, gap_alert }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_panel_and_alert_query_returns_data_on_a_real_prometheus() {
    metrics_util::require_binary("prometheus");
    let retrans: SocketAddr = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let gw = Gw::start_with(|c| {
        c.ws.queue_capacity = 64;
        c.ws.slow_client_timeout_ms = 1000;
        c.ws.send_buffer_bytes = 16 * 1024;
        c.ws.max_batch_bytes = 2048;
        // Gap fill from feed-sim's retransmission server, at most 2
        // requests a second: a few holes are filled (the Feed recovery
        // panels, fill latency included, have samples), the others are
        // refused by the rate and stay gaps (the gap panels and alert).
        c.feed.retrans_addr = Some(retrans);
        c.feed.retrans_max_per_sec = 2;
    })
    .await;
    let metrics_addr = gw.running.metrics_addr;
    let sim_metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let rules = dashboards_dir().join("prometheus/alerts.yml");
    let fleet_rules = dashboards_dir().join("prometheus/fleet_alerts.yml");
    let config = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n  evaluation_interval: 1s\n\
         rule_files:\n  - {rules}\n  - {fleet_rules}\n\
         scrape_configs:\n\
         \x20 - job_name: quotecast-gateway\n    static_configs:\n      - targets: [\"{metrics_addr}\"]\n\
         \x20 - job_name: feed-sim\n    static_configs:\n      - targets: [\"{sim_metrics}\"]\n",
        rules = rules.display(),
        fleet_rules = fleet_rules.display()
    );
    let prom = Prometheus::start(&config).await;
    prom.until_data("up{job=\"quotecast-gateway\"} == 1", Duration::from_secs(20)).await;

    // The feed: feed-sim (with its own /metrics and a retransmission
    // server) at 20,000 ticks/s over 20 symbols, dropping, duplicating and
    // reordering packets now and then.
    let stop = CancellationToken::new();
    let sim_cfg = feed_sim::SimConfig {
        group: gw.group,
        port: gw.port,
        symbols: 20,
        rate: 20_000,
        heartbeat_ms: 100,
        drop_every: 101,
        dup_every: 89,
        reorder_every: 83,
        session: Some("DASH".into()),
        metrics_addr: Some(sim_metrics),
        retrans_addr: Some(retrans),
        ..feed_sim::SimConfig::default()
    };
    let sim = tokio::spawn(feed_sim::run(sim_cfg, stop.clone()));
    gw.until("feed-sim directory", |r| r.core.book.len() == 20).await;
    let symbols: Vec<String> =
        gw.running.core.book.symbols().iter().map(|s| s.as_str().to_string()).collect();

    let mut tasks = ws_traffic(&gw, symbols.clone(), stop.clone()).await;
    tasks.push(grpc_traffic(gw.running.grpc_addr, symbols[0].clone(), stop.clone()).await);
    // One malformed datagram and one health check.
    gw.sender("JUNK").raw(b"\x01\x02\x03");
    assert_eq!(http_get(gw.running.ws_addr, "/healthz").await.0, 200);

    gw.until("a slow consumer closed", |r| r.core.ws.slow_closes.load(Relaxed) >= 1).await;
    gw.until("conflation", |r| r.core.ws.conflated.load(Relaxed) > 0).await;
    gw.until("a feed gap", |r| r.core.feed.gaps.load(Relaxed) > 0).await;
    gw.until("a hole filled by retransmission", |r| r.core.feed.retrans.filled.load(Relaxed) > 0).await;
    prom.until_data("quotecast_ws_slow_consumer_closes_total > 0", Duration::from_secs(20)).await;
    prom.until_data("quotecast_grpc_requests_total{code=\"INVALID_ARGUMENT\"} > 0", Duration::from_secs(20))
        .await;
    // Traffic keeps flowing while Prometheus scrapes: poll until every
    // panel query and alert measure has data (a rate needs two samples in
    // its window) and the gap-rate alert is pending, or 30 s have passed.
    let instance = metrics_addr.to_string();
    let t0 = std::time::Instant::now();
    let mut passes = 0;
    let q = loop {
        let q = evaluate_everything(&prom, &instance).await;
        passes += 1;
        if q.failures.is_empty() && q.gap_alert.is_some() || t0.elapsed() > Duration::from_secs(30) {
            break q;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    eprintln!("queries evaluated {passes} times in {:?}", t0.elapsed());
    let QueryResults { failures, checked, alerts, groups, active, gap_alert } = q;
    assert!(alerts >= 5, "alert rules not loaded: {groups}");
    assert!(checked >= 40, "only {checked} panel queries found");
    assert!(
        failures.is_empty(),
        "{} of {checked} panel queries / {alerts} alerts failed ({passes} tries in {:?}):\n{}\n\nPrometheus log:\n{}",
        failures.len(),
        t0.elapsed(),
        failures.join("\n"),
        prom.log()
    );

    // The traffic loses ~1% of messages in gaps: the gap-rate alert is at
    // least pending (it fires after its `for`).
    assert!(gap_alert.is_some(), "QuotecastFeedGapRate not pending on ~1% loss: {active}");

    stop.cancel();
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
    }
    let report = tokio::time::timeout(Duration::from_secs(10), sim).await.unwrap().unwrap().unwrap();
    assert!(report.dropped_packets > 0 && report.duplicated_packets > 0);
    gw.stop().await;
    drop(prom);
}
