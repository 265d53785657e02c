//! The `vevee` binary: `vevee serve --config FILE`.

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use vevee::config::Config;

vevee::global_allocator!();

/// How often mimalloc is asked to give back what it freed.
const ALLOCATOR_COLLECT_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// mimalloc holds the long-lived heap of sleeping users' entries (`actors::long_lived`), whose
/// blocks are freed whenever a user wakes. It gives freed memory back to the system only when
/// some allocator call runs to notice; a periodic `mi_collect(false)` runs the purges that are
/// due, off the request path.
fn collect_allocator_periodically() {
    let spawned = std::thread::Builder::new()
        .name("allocator-collect".into())
        .spawn(|| {
            loop {
                std::thread::sleep(ALLOCATOR_COLLECT_EVERY);
                // SAFETY: mi_collect takes no pointers and may be called from any thread at any
                // time; `false` only does the work that is due, it does not force.
                unsafe { libmimalloc_sys::mi_collect(false) };
            }
        });
    if let Err(error) = spawned {
        tracing::warn!(%error, "could not start the allocator's collect thread");
    }
}

#[derive(Parser)]
#[command(
    name = "vevee",
    version,
    about = "Usage metering and credit packs for AI-generation apps"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Runs the server (the default).
    Serve {
        #[arg(long, default_value = "config.toml", env = "VEVEE_CONFIG")]
        config: PathBuf,
    },
    /// Replays the data offline and checks every invariant; exits 1 on a violation.
    Verify {
        #[arg(long, default_value = "config.toml", env = "VEVEE_CONFIG")]
        config: PathBuf,
    },
    /// Takes a snapshot offline and drops the journal it covers.
    Snapshot {
        #[arg(long, default_value = "config.toml", env = "VEVEE_CONFIG")]
        config: PathBuf,
    },
    /// Prints the OpenAPI 3.1 document of the HTTP API (what `GET /openapi.json` serves), so a
    /// client generator can run without a server.
    Openapi,
}

fn init_logs(json: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown signal received");
}

fn main() -> anyhow::Result<()> {
    let command = Cli::parse().command.unwrap_or(Cmd::Serve {
        config: "config.toml".into(),
    });
    match command {
        Cmd::Serve { config } => {
            let config = Config::load(&config)?;
            init_logs(config.server.json_logs);
            collect_allocator_periodically();
            let runtime = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
            runtime.block_on(vevee::startup::run(config, shutdown_signal()))
        }
        Cmd::Verify { config } => {
            let config = Config::load(&config)?;
            init_logs(false);
            let report = vevee::admin::verify(&config)?;
            println!("{report}");
            if report.violation.is_some() {
                std::process::exit(1);
            }
            Ok(())
        }
        Cmd::Snapshot { config } => {
            let config = Config::load(&config)?;
            init_logs(false);
            let seq = vevee::admin::snapshot(&config)?;
            println!("snapshot written at sequence {seq}");
            Ok(())
        }
        Cmd::Openapi => {
            println!("{}", vevee::http::openapi::json());
            Ok(())
        }
    }
}
