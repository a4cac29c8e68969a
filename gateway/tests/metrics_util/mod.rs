//! Helpers of the metrics tests: a plain HTTP/1.1 GET, a parser of the
//! Prometheus text exposition, and a real Prometheus server run as a child
//! process against a temporary configuration.

#![allow(dead_code, missing_docs)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The repository's `dashboards/` directory.
pub fn dashboards_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../dashboards").canonicalize().unwrap()
}

/// The command that installs Prometheus and promtool here.
pub const INSTALL_HINT: &str =
    "apt-get install -y prometheus  (Debian's package ships prometheus and promtool; \
     scripts/test.sh installs it)";

/// Path of `name` on PATH; fails the test (never skips it) when missing.
pub fn require_binary(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file()).unwrap_or_else(|| {
        panic!("`{name}` is not installed; these tests need a real Prometheus: {INSTALL_HINT}")
    })
}

/// A GET over a fresh connection: (status, body).
pub async fn http_get(addr: SocketAddr, path_and_query: &str) -> (u16, String) {
    let mut s = tokio::time::timeout(Duration::from_secs(10), tokio::net::TcpStream::connect(addr))
        .await
        .expect("connect timed out")
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    let req = format!("GET {path_and_query} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut buf))
        .await
        .expect("response timed out")
        .unwrap();
    let text = String::from_utf8(buf).expect("UTF-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("HTTP response");
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("status line");
    let chunked = head.lines().any(|l| l.to_ascii_lowercase().starts_with("transfer-encoding: chunked"));
    (status, if chunked { dechunk(body) } else { body.to_string() })
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = s.split_once("\r\n").expect("chunk size");
        let n = usize::from_str_radix(size.split(';').next().unwrap().trim(), 16).expect("hex chunk size");
        if n == 0 {
            return out;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
}

/// Percent-encodes a query parameter value.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One scrape: series (name plus labels exactly as rendered) -> value, and
/// the declared type of each family.
#[derive(Debug, Default)]
pub struct Scrape {
    pub series: BTreeMap<String, f64>,
    pub types: BTreeMap<String, String>,
    pub text: String,
}

impl Scrape {
    pub fn parse(text: &str) -> Scrape {
        let mut s = Scrape { text: text.to_string(), ..Scrape::default() };
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("TYPE line");
                s.types.insert(name.to_string(), kind.to_string());
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("bad sample line {line:?}"));
            let v = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v.parse().unwrap_or_else(|_| panic!("bad value in {line:?}")),
            };
            assert!(s.series.insert(series.to_string(), v).is_none(), "series twice: {series}");
        }
        s
    }

    /// The value of a series, failing with the whole scrape if absent.
    pub fn get(&self, series: &str) -> f64 {
        *self.series.get(series).unwrap_or_else(|| panic!("series {series} not in scrape:\n{}", self.text))
    }

    /// The value of a series as an exact integer.
    pub fn count(&self, series: &str) -> u64 {
        let v = self.get(series);
        assert!(v >= 0.0 && v.fract() == 0.0, "{series} = {v} is not a count");
        v as u64
    }
}

/// GETs `/metrics` of `addr` and parses it.
pub async fn scrape(addr: SocketAddr) -> Scrape {
    let (status, body) = http_get(addr, "/metrics").await;
    assert_eq!(status, 200, "GET /metrics: {body}");
    Scrape::parse(&body)
}

/// A free TCP port on 127.0.0.1 (bound then released: a tiny race that a
/// retry would cover; the port range is large).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(what: &str) -> TempDir {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "quotecast-{what}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A Prometheus server, killed when dropped.
pub struct Prometheus {
    child: Child,
    pub addr: SocketAddr,
    dir: TempDir,
}

impl Prometheus {
    /// Writes `config` (prometheus.yml text) to a temporary directory and
    /// starts Prometheus on a free loopback port with its TSDB there; waits
    /// until it is ready.
    pub async fn start(config: &str) -> Prometheus {
        let bin = require_binary("prometheus");
        let dir = TempDir::new("prometheus");
        let cfg = dir.0.join("prometheus.yml");
        std::fs::write(&cfg, config).unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let log = std::fs::File::create(dir.0.join("prometheus.log")).unwrap();
        let child = Command::new(bin)
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!("--storage.tsdb.path={}", dir.0.join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting prometheus");
        let mut p = Prometheus { child, addr, dir };
        p.wait_ready().await;
        p
    }

    /// Prometheus' own log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.0.join("prometheus.log")).unwrap_or_default()
    }

    async fn wait_ready(&mut self) {
        let t0 = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("prometheus exited with {status} before it was ready:\n{}", self.log());
            }
            if let Ok(Ok(s)) =
                tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(self.addr)).await
            {
                drop(s);
                if http_get(self.addr, "/-/ready").await.0 == 200 {
                    return;
                }
            }
            assert!(t0.elapsed() < Duration::from_secs(60), "prometheus not ready in 60 s:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// GET an API path; returns the `data` of a successful answer.
    pub async fn api(&self, path_and_query: &str) -> Result<serde_json::Value, String> {
        let (status, body) = http_get(self.addr, path_and_query).await;
        let v: serde_json::Value =
            serde_json::from_str(&body).map_err(|e| format!("HTTP {status}, not JSON ({e}): {body}"))?;
        if v["status"] != "success" {
            return Err(format!("HTTP {status}: {} {}", v["errorType"], v["error"]));
        }
        Ok(v["data"].clone())
    }

    /// Evaluates an instant query now: the result vector (or scalar as a
    /// one-element vector).
    pub async fn query(&self, expr: &str) -> Result<Vec<(serde_json::Value, f64)>, String> {
        let data = self.api(&format!("/api/v1/query?query={}", encode(expr))).await?;
        let parse = |v: &serde_json::Value| -> f64 {
            match v.as_str().unwrap_or("NaN") {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                s => s.parse().unwrap_or(f64::NAN),
            }
        };
        match data["resultType"].as_str() {
            Some("vector") => Ok(data["result"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| (r["metric"].clone(), parse(&r["value"][1])))
                .collect()),
            Some("scalar") => Ok(vec![(serde_json::Value::Null, parse(&data["result"][1]))]),
            other => Err(format!("unexpected result type {other:?}")),
        }
    }

    /// Waits until `expr` returns at least one sample.
    pub async fn until_data(&self, expr: &str, within: Duration) {
        let t0 = Instant::now();
        loop {
            if matches!(self.query(expr).await, Ok(r) if !r.is_empty()) {
                return;
            }
            assert!(t0.elapsed() < within, "no data for {expr} within {within:?}:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a promtool subcommand in `dir`; returns (success, combined output).
pub fn promtool(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(require_binary("promtool"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("running promtool");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}
