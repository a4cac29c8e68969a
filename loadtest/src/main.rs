//! `loadtest` binary: parse flags, run, print the summary, exit with a
//! status scripts can branch on. Everything else lives in the library.

use clap::Parser;
use loadtest::config::{EX_RUNTIME, EX_USAGE};
use loadtest::Config;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    let cfg = match Config::try_parse() {
        Ok(c) => c,
        Err(e) if e.use_stderr() => {
            let first = e
                .to_string()
                .lines()
                .next()
                .unwrap_or("bad arguments")
                .trim_start_matches("error: ")
                .to_string();
            eprintln!("loadtest: {first} (see --help)");
            return ExitCode::from(EX_USAGE);
        }
        Err(e) => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
    };
    if let Err(e) = cfg.validate() {
        eprintln!("loadtest: {e}");
        return ExitCode::from(EX_USAGE);
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RUST_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    // The controller and the in-process feed need little: the clients run
    // on their own threads.
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("loadtest: starting the runtime: {e}");
            return ExitCode::from(EX_RUNTIME);
        }
    };
    let json = cfg.output.json.clone();
    let shutdown = CancellationToken::new();
    let result = rt.block_on(async {
        let s = shutdown.clone();
        tokio::spawn(async move {
            // Ctrl-C ends the run early; the report still comes out.
            let _ = tokio::signal::ctrl_c().await;
            s.cancel();
        });
        loadtest::run(cfg, shutdown).await
    });
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!("loadtest: {e}");
            return ExitCode::from(e.exit_code());
        }
    };
    print!("{report}");
    if let Some(path) = json {
        let text = match serde_json::to_string_pretty(&report) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("loadtest: encoding the JSON report: {e}");
                return ExitCode::from(EX_RUNTIME);
            }
        };
        if let Err(e) = std::fs::write(&path, text + "\n") {
            eprintln!("loadtest: writing {}: {e}", path.display());
            return ExitCode::from(EX_RUNTIME);
        }
    }
    ExitCode::from(report.exit_code())
}
