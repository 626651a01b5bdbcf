//! `venued agent ...`: the command line of the PC agent.

use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Subcommand)]
pub enum AgentCmd {
    /// Fetch this PC's MQTT credentials and the box CA with a code from staff
    /// (`venued station enroll <id>` on the controller).
    Enroll {
        /// The controller's HTTPS address, e.g. https://192.168.1.10:8443.
        #[arg(long)]
        controller: String,
        #[arg(long)]
        code: String,
        /// Where to keep agent.json and ca.pem (default: /etc/venued-agent as root,
        /// else ~/.config/venued-agent).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Enforce this PC's sessions: follow the controller over MQTT, lock and unlock, warn,
    /// and keep enforcing the last known end time while the controller is unreachable.
    Run {
        /// Where `enroll` saved agent.json and ca.pem.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// How actions reach the OS: `log` writes them as lines (to --log-file or stdout);
        /// `loginctl` locks, unlocks and logs off the Linux desktop session through
        /// systemd-logind. The Windows adapter comes with the agent's next release.
        #[arg(long, default_value = "log", value_parser = ["log", "loginctl"])]
        adapter: String,
        /// For `loginctl`: the session to act on (default: $XDG_SESSION_ID, else the
        /// caller's own session).
        #[arg(long)]
        session: Option<String>,
        #[arg(long)]
        log_file: Option<PathBuf>,
        /// The controller's MQTT TLS port, if not the one enrollment reported.
        #[arg(long)]
        mqtt_port: Option<u16>,
        /// Test only: act as if this PC's wall clock were off by this many seconds.
        #[arg(long, hide = true, default_value_t = 0, allow_hyphen_values = true)]
        wall_offset_secs: i64,
    },
}

/// `venued agent ...`, in the controller build and the agent-only build alike.
pub fn run(cmd: AgentCmd) -> ExitCode {
    let (controller, code, dir) = match cmd {
        AgentCmd::Enroll {
            controller,
            code,
            dir,
        } => (controller, code, dir),
        AgentCmd::Run {
            dir,
            adapter,
            session,
            log_file,
            mqtt_port,
            wall_offset_secs,
        } => {
            let session = session.or_else(|| std::env::var("XDG_SESSION_ID").ok());
            let kind = match adapter.as_str() {
                "loginctl" => AdapterKind::Loginctl(session),
                _ => AdapterKind::Log(log_file),
            };
            return agent_run(dir, kind, mqtt_port, wall_offset_secs);
        }
    };
    let dir = dir.unwrap_or_else(crate::agent::enroll::default_dir);
    let Some(runtime) = crate::runtime::build(&mut tokio::runtime::Builder::new_current_thread())
    else {
        return ExitCode::FAILURE;
    };
    match runtime.block_on(crate::agent::enroll::enroll(&controller, &code, &dir)) {
        Ok(creds) => {
            println!(
                "enrolled as {} for station {}; credentials and CA saved in {}",
                creds.username,
                creds.station,
                dir.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

enum AdapterKind {
    Log(Option<PathBuf>),
    Loginctl(Option<String>),
}

fn agent_run(
    dir: Option<PathBuf>,
    kind: AdapterKind,
    mqtt_port: Option<u16>,
    wall_offset_secs: i64,
) -> ExitCode {
    crate::logging::init("info", crate::config::LogFormat::Auto);
    let dir = dir.unwrap_or_else(crate::agent::enroll::default_dir);
    let clock: std::sync::Arc<dyn crate::clock::Clock> = std::sync::Arc::new(
        crate::clock::SystemClock::new(crate::clock::TrustMode::Always),
    );
    let adapter: Box<dyn crate::agent::adapter::Adapter> = match kind {
        AdapterKind::Loginctl(session) => {
            Box::new(crate::agent::adapter::LoginctlAdapter::new(session))
        }
        AdapterKind::Log(None) => Box::new(crate::agent::adapter::LogAdapter::new(
            Box::new(std::io::stdout()),
            clock.clone(),
        )),
        AdapterKind::Log(Some(path)) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path);
            match file {
                Ok(f) => Box::new(crate::agent::adapter::LogAdapter::new(
                    Box::new(f),
                    clock.clone(),
                )),
                Err(e) => {
                    eprintln!("error: cannot open {}: {e}", path.display());
                    return ExitCode::FAILURE;
                }
            }
        }
    };
    let opts = crate::agent::run::Options {
        wall_offset: jiff::SignedDuration::from_secs(wall_offset_secs),
        mqtt_port,
    };
    let Some(runtime) = crate::runtime::build(&mut tokio::runtime::Builder::new_current_thread())
    else {
        return ExitCode::FAILURE;
    };
    match runtime.block_on(crate::agent::run::run(&dir, adapter, clock, opts)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The agent-only build's entry point (Windows PCs): only `venued agent ...`.
#[derive(Debug, clap::Parser)]
#[command(name = "venued", version, about = "venued PC agent")]
struct AgentOnly {
    #[command(subcommand)]
    command: Top,
}

#[derive(Debug, clap::Subcommand)]
enum Top {
    /// The PC agent.
    #[command(subcommand)]
    Agent(AgentCmd),
}

pub fn main() -> ExitCode {
    let Top::Agent(cmd) = <AgentOnly as clap::Parser>::parse().command;
    run(cmd)
}
