//! `gateway` binary: parse config, start telemetry, run until a signal.

use anyhow::Context;
use clap::Parser;
use gateway::{Bound, Config};
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
            eprintln!("gateway: {first} (see --help)");
            return ExitCode::from(EX_USAGE);
        }
        Err(e) => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
    };
    if let Err(e) = cfg.validate() {
        eprintln!("gateway: error: {e}");
        return ExitCode::from(EX_USAGE);
    }
    if let Err(e) = gateway::telemetry::init(&cfg.serve.log) {
        eprintln!("gateway: error: --log: {e}");
        return ExitCode::from(EX_USAGE);
    }
    match run(cfg) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gateway: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cfg: Config) -> anyhow::Result<()> {
    // The control plane (accept, gRPC, metrics, signals) needs little CPU;
    // connections run on their own per-core runtimes.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("control")
        .enable_all()
        .build()
        .context("building the control runtime")?;
    rt.block_on(async {
        // Handlers first: a SIGTERM right after the "ready" line below must
        // start a graceful shutdown, not kill the process.
        let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
        let bound = Bound::bind(&cfg).context("binding sockets")?;
        let shutdown = CancellationToken::new();
        let gw = gateway::start(cfg, bound, shutdown.clone()).await?;
        println!(
            "quotecast gateway: WebSocket ws://{ws}/  health http://{ws}/readyz  gRPC {}  metrics http://{}/metrics",
            gw.grpc_addr,
            gw.metrics_addr,
            ws = gw.ws_addr
        );
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::info!("shutdown requested: draining (a second signal stops at once)");
        // The drain ends by starting the shutdown; a second signal starts it
        // now (clients then close with 1001 within the grace period).
        tokio::select! {
            () = gw.drain() => {}
            _ = term.recv() => { tracing::info!("second signal: shutting down now"); shutdown.cancel(); }
            _ = int.recv() => { tracing::info!("second signal: shutting down now"); shutdown.cancel(); }
        }
        gw.wait().await
    })
}
