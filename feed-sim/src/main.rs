//! `feed-sim`: parse flags, start logging, wait for Ctrl-C/SIGTERM, run the
//! simulator, print its report. Everything else lives in the library.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::Parser;
use feed_sim::config::EX_USAGE;
use feed_sim::SimConfig;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cfg = match SimConfig::try_parse() {
        Ok(cfg) => cfg,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // clap's own rendering carries usage lines; the first line is
            // the diagnosis.
            let text = e.to_string();
            eprintln!(
                "feed-sim: {}",
                text.lines().next().unwrap_or("bad arguments").trim_start_matches("error: ")
            );
            return ExitCode::from(EX_USAGE);
        }
    };
    if let Err(e) = cfg.validate() {
        eprintln!("feed-sim: {e}");
        return ExitCode::from(EX_USAGE);
    }
    if cfg.list_symbols {
        let market = feed_sim::market::Market::new(cfg.seed, cfg.symbols, cfg.zipf, cfg.trade_ratio);
        println!("{}", market.tickers().join("\n"));
        return ExitCode::SUCCESS;
    }
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("feed-sim: error: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let shutdown = CancellationToken::new();
    let truth_out = cfg.truth_out.clone();
    match rt.block_on(async {
        tokio::spawn(cancel_on_signal(shutdown.clone()));
        feed_sim::run(cfg, shutdown).await
    }) {
        Ok(report) => {
            if let Some(path) = truth_out {
                if let Err(e) = report.write_truth(&path) {
                    eprintln!("feed-sim: error: --truth-out {}: {e}", path.display());
                    return ExitCode::FAILURE;
                }
            }
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("feed-sim: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Cancels `token` on the first SIGINT or SIGTERM; the sender then ends
/// the session properly instead of going silent.
async fn cancel_on_signal(token: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    tracing::info!("shutdown requested; ending the session");
    token.cancel();
}
