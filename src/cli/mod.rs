//! Subcommand parsing and wiring. `main.rs` only calls [`main`].

mod client;
mod commands;
mod devices;
mod mqtt;
mod serve;

pub use client::{Client, ClientError};

use crate::config::Config;
use crate::engine::EngineConfig;
use crate::store::StoreOptions;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(name = "venued", version, about = "Edge controller for gaming venues")]
pub struct Cli {
    /// Configuration file (TOML). Without it, the embedded defaults apply.
    #[arg(long, global = true, env = "VENUED_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory (overrides the config and VENUED_DATA_DIR).
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run the controller.
    Serve,
    /// Check configuration files.
    #[command(subcommand)]
    Config(commands::ConfigCmd),
    /// Manage stations (PCs and consoles).
    #[command(subcommand)]
    Station(commands::StationCmd),
    /// Start, extend, pause, resume, transfer and stop sessions.
    #[command(subcommand)]
    Session(commands::SessionCmd),
    /// Manage staff accounts.
    #[command(subcommand)]
    User(commands::UserCmd),
    /// API tokens for the network API.
    #[command(subcommand)]
    Token(commands::TokenCmd),
    /// Accounts of the embedded MQTT broker (agents, plugs, integrations).
    #[command(subcommand)]
    Mqtt(mqtt::MqttCmd),
    /// Plugs, routers and MQTT actions that enforce console stations.
    #[command(subcommand)]
    Device(devices::DeviceCmd),
    /// Verify and read the tamper-evident event log.
    #[command(subcommand)]
    Audit(commands::AuditCmd),
    /// Show the venue clock, or confirm the time as staff.
    #[command(subcommand)]
    Clock(commands::ClockCmd),
    /// The PC agent: enroll, run, status, install-service (docs/agent.md).
    #[command(subcommand)]
    #[cfg(feature = "agent")]
    Agent(crate::agent::cli::AgentCmd),
    /// The box's CA and HTTPS certificate (files only; no running controller needed).
    #[command(subcommand)]
    Tls(commands::TlsCmd),
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Cmd::Config(cmd) = &cli.command {
        return commands::config(cmd);
    }
    // The agent runs on a PC, with nothing of the controller's configuration.
    let cli = match cli.command {
        #[cfg(feature = "agent")]
        Cmd::Agent(cmd) => return crate::agent::cli::run(cmd),
        _ => cli,
    };
    let config = match load_config(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Cmd::Tls(cmd) = &cli.command {
        return commands::tls(cmd, &config);
    }
    let Some(runtime) = crate::runtime::build(&mut tokio::runtime::Builder::new_multi_thread())
    else {
        return ExitCode::FAILURE;
    };
    match cli.command {
        Cmd::Serve => {
            crate::logging::init(&config.log.level, config.log.format);
            if let Some(warning) = cli
                .config
                .as_deref()
                .and_then(crate::config::permission_warning)
            {
                tracing::warn!("{warning}");
            }
            match runtime.block_on(serve::run(config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e}");
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        // Admin commands log only problems; their output is the answer.
        cmd => {
            crate::logging::init("warn", crate::config::LogFormat::Text);
            runtime.block_on(commands::run(cmd, config))
        }
    }
}

fn load_config(cli: &Cli) -> Result<Config, crate::config::ConfigError> {
    let mut config = match &cli.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    config.apply_env(&|k| std::env::var(k).ok())?;
    if let Some(dir) = &cli.data_dir {
        config.data.dir = dir.clone();
    }
    Ok(config)
}

pub(crate) fn engine_config(config: &Config) -> EngineConfig {
    EngineConfig {
        queue_capacity: config.engine.queue_capacity,
        max_batch: config.engine.max_batch,
        checkpoint_interval: std::time::Duration::try_from(config.engine.checkpoint_interval)
            .unwrap_or(std::time::Duration::from_secs(10)),
        policy: config.session_policy(),
        outage: config.clock.outage_policy,
        jump_threshold: config.clock.jump_threshold,
    }
}

pub(crate) fn store_options(config: &Config) -> StoreOptions {
    StoreOptions {
        cache_bytes: config.data.cache_size_mib as usize * 1024 * 1024,
    }
}

pub(crate) fn current_uid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}
