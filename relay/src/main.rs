//! `feed-relay` binary: parse config, start logging, run until a signal.

use clap::Parser;
use relay::Config;
use std::process::ExitCode;
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

/// BSD `EX_USAGE`: the command was used incorrectly.
const EX_USAGE: u8 = 64;

fn main() -> ExitCode {
    let cfg = match Config::try_parse() {
        Ok(c) => c,
        Err(e) if e.use_stderr() => {
            let first = e.to_string().lines().next().unwrap_or_default().to_string();
            eprintln!("feed-relay: {first} (see --help)");
            return ExitCode::from(EX_USAGE);
        }
        Err(e) => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
    };
    if let Err(e) = cfg.validate() {
        eprintln!("feed-relay: error: {e}");
        return ExitCode::from(EX_USAGE);
    }
    if let Err(e) = gateway::telemetry::init(&cfg.log) {
        eprintln!("feed-relay: error: --log: {e}");
        return ExitCode::from(EX_USAGE);
    }
    // Two threads: the line receivers and the NATS connection.
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("relay")
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("feed-relay: error: building the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let shutdown = CancellationToken::new();
        let relay = relay::start(cfg, shutdown.clone()).await?;
        println!("quotecast feed-relay: metrics http://{}/metrics", relay.metrics_addr);
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        shutdown.cancel();
        relay.wait().await;
        anyhow::Ok(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("feed-relay: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
