//! `venued agent ...`: the command line of the PC agent.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Subcommand)]
pub enum AgentCmd {
    /// Fetch this PC's MQTT credentials and the box CA with a code from staff
    /// (`venued station enroll <id>` on the controller).
    Enroll {
        /// The controller's HTTPS address, e.g. https://192.168.1.10:8443. Without it the
        /// agent looks for the controller on this network by mDNS and takes the one whose
        /// CA matches the code.
        #[arg(long)]
        controller: Option<String>,
        #[arg(long)]
        code: String,
        /// How long to look for the controller by mDNS (without --controller): seconds,
        /// or a duration such as 10s or 1500ms; 1s to 2m.
        #[arg(long, default_value = "5s", value_parser = crate::agent::enroll::parse_discover_timeout, conflicts_with = "controller")]
        discover_timeout: std::time::Duration,
        /// Where to keep agent.json and ca.pem (default: /etc/venued-agent as root,
        /// else ~/.config/venued-agent; %ProgramData%\venued\agent on Windows).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Enforce this PC's sessions: follow the controller over MQTT, lock and unlock, warn,
    /// and keep enforcing the last known end time while the controller is unreachable.
    Run(RunArgs),
    /// What the agent on this PC is doing (from the status.json it keeps).
    Status {
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Print the status as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Draw the lock screen and countdown (started by `agent run --overlay` in the
    /// user's desktop session; not run by hand).
    Overlay {
        /// The agent's loopback address to connect to.
        #[arg(long)]
        connect: SocketAddr,
        /// A TrueType font (default: DejaVu Sans on Linux, Segoe UI on Windows).
        #[arg(long)]
        font: Option<PathBuf>,
    },
    /// Install and start the agent as a service: a systemd unit on Linux, a Windows
    /// service on Windows. It runs `venued agent run` with the options given here.
    InstallService(InstallArgs),
    /// Stop and remove the service `install-service` made.
    UninstallService {
        /// Where the systemd unit lives (Linux).
        #[arg(long, default_value = "/etc/systemd/system", hide = true)]
        unit_dir: PathBuf,
        /// Only remove the unit file; do not call systemctl (Linux).
        #[arg(long)]
        no_systemctl: bool,
    },
    /// The Windows service's entry point, called by the service manager.
    #[cfg(windows)]
    #[command(hide = true)]
    Service {
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Where `enroll` saved agent.json and ca.pem.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// How actions reach the OS: `log` writes them as lines (to --log-file or stdout);
    /// `loginctl` locks, unlocks and logs off the Linux desktop session through
    /// systemd-logind; `windows` logs off the console session, keeps the PC awake during
    /// a session and shuts down (the Windows service uses it); `command` runs --command
    /// with the action as its arguments.
    #[arg(long, default_value = "log", value_parser = ["log", "loginctl", "windows", "command"])]
    pub adapter: String,
    /// For `command`: the program to run for each action, e.g. `/usr/local/bin/kiosk-hook`
    /// (called as `kiosk-hook lock`, `kiosk-hook warn 300`, `kiosk-hook message TEXT`).
    #[arg(long, required_if_eq("adapter", "command"))]
    pub command: Option<PathBuf>,
    /// For `loginctl`: the session to act on (default: $XDG_SESSION_ID, else the
    /// caller's own session).
    #[arg(long)]
    pub session: Option<String>,
    #[arg(long)]
    pub log_file: Option<PathBuf>,
    /// Show our lock screen and the session countdown (a helper process in the desktop
    /// session; on Linux it needs $DISPLAY).
    #[arg(long)]
    pub overlay: bool,
    /// The overlay's TrueType font.
    #[arg(long)]
    pub font: Option<PathBuf>,
    /// The controller's MQTT TLS port, if not the one enrollment reported.
    #[arg(long)]
    pub mqtt_port: Option<u16>,
    /// Test only: act as if this PC's wall clock were off by this many seconds.
    #[arg(long, hide = true, default_value_t = 0, allow_hyphen_values = true)]
    pub wall_offset_secs: i64,
}

#[derive(Debug, Clone, clap::Args)]
pub struct InstallArgs {
    /// The agent directory the service uses (default as for `enroll`).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// The adapter the service runs with (Linux default `loginctl`).
    #[arg(long, default_value = "loginctl", value_parser = ["log", "loginctl"])]
    pub adapter: String,
    /// Where to write the systemd unit (Linux).
    #[arg(long, default_value = "/etc/systemd/system", hide = true)]
    pub unit_dir: PathBuf,
    /// Only write the unit file; do not call systemctl (Linux).
    #[arg(long)]
    pub no_systemctl: bool,
    /// Also run the lock screen and countdown overlay. On Linux this makes a systemd
    /// *user* unit (in ~/.config/systemd/user, started with the graphical session), since
    /// only the desktop's own user may draw on it.
    #[arg(long)]
    pub overlay: bool,
}

/// `venued agent ...`, in the controller build and the agent-only build alike.
pub fn run(cmd: AgentCmd) -> ExitCode {
    match cmd {
        AgentCmd::Enroll {
            controller,
            code,
            discover_timeout,
            dir,
        } => enroll(controller.as_deref(), &code, discover_timeout, dir),
        AgentCmd::Run(args) => agent_run(args),
        AgentCmd::Status { dir, json } => status(dir, json),
        AgentCmd::Overlay { connect, font } => overlay(connect, font),
        AgentCmd::InstallService(args) => report(crate::agent::service::install(&args)),
        AgentCmd::UninstallService {
            unit_dir,
            no_systemctl,
        } => report(crate::agent::service::uninstall(&unit_dir, no_systemctl)),
        #[cfg(windows)]
        AgentCmd::Service { dir } => report(crate::agent::windows::service::dispatch(dir)),
    }
}

fn report(result: Result<String, String>) -> ExitCode {
    match result {
        Ok(done) => {
            println!("{done}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn enroll(
    controller: Option<&str>,
    code: &str,
    discover_timeout: std::time::Duration,
    dir: Option<PathBuf>,
) -> ExitCode {
    let dir = dir.unwrap_or_else(crate::agent::enroll::default_dir);
    let Some(runtime) = crate::runtime::build(&mut tokio::runtime::Builder::new_current_thread())
    else {
        return ExitCode::FAILURE;
    };
    let enrolled = crate::agent::enroll::enroll(controller, code, &dir, discover_timeout);
    match runtime.block_on(enrolled) {
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

fn status(dir: Option<PathBuf>, json: bool) -> ExitCode {
    let dir = dir.unwrap_or_else(crate::agent::enroll::default_dir);
    match crate::agent::status::read(&dir) {
        Ok(s) => {
            use crate::clock::Clock as _;
            let now = crate::clock::SystemClock::new(crate::clock::TrustMode::Always).wall();
            if json {
                println!("{}", serde_json::to_string_pretty(&s).unwrap_or_default());
            } else {
                print!("{}", crate::agent::status::describe(&s, now));
            }
            if crate::agent::status::fresh(&s, now) {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(3)
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(3)
        }
    }
}

fn overlay(connect: SocketAddr, font: Option<PathBuf>) -> ExitCode {
    crate::logging::init("info", crate::config::LogFormat::Auto);
    let Ok(token) = std::env::var(crate::agent::overlay::ipc::TOKEN_ENV) else {
        eprintln!("error: `venued agent overlay` is started by `venued agent run --overlay`");
        return ExitCode::from(2);
    };
    let font = match crate::agent::overlay::render::Font::load(font.as_deref()) {
        Ok(f) => Some(f),
        Err(e) => {
            // The lock page still covers the screen without text.
            tracing::error!(error = %e, "drawing without text");
            None
        }
    };
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("USERNAME"))
        .ok();
    #[cfg(unix)]
    let display = crate::agent::overlay::x11::X11::open();
    #[cfg(windows)]
    let display = crate::agent::windows::display::Win32::open();
    let result = display
        .and_then(|mut d| crate::agent::overlay::helper::run(connect, &token, &mut d, font, user));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Everything `agent run` needs, built from its arguments (also the Windows service's).
pub struct Prepared {
    pub dir: PathBuf,
    pub adapter: Box<dyn crate::agent::adapter::Adapter>,
    pub clock: std::sync::Arc<dyn crate::clock::Clock>,
    pub opts: crate::agent::run::Options,
}

pub fn prepare(args: RunArgs) -> Result<Prepared, String> {
    let dir = args.dir.unwrap_or_else(crate::agent::enroll::default_dir);
    let clock: std::sync::Arc<dyn crate::clock::Clock> = std::sync::Arc::new(
        crate::clock::SystemClock::new(crate::clock::TrustMode::Always),
    );
    let adapter: Box<dyn crate::agent::adapter::Adapter> = match args.adapter.as_str() {
        "loginctl" => {
            let session = args
                .session
                .or_else(|| std::env::var("XDG_SESSION_ID").ok());
            Box::new(crate::agent::adapter::LoginctlAdapter::new(session))
        }
        "command" => match &args.command {
            Some(program) => Box::new(crate::agent::adapter::CommandAdapter::new(program.clone())),
            None => return Err("--adapter command needs --command PROGRAM".into()),
        },
        #[cfg(windows)]
        "windows" => Box::new(crate::agent::windows::adapter::WindowsAdapter::new()),
        #[cfg(not(windows))]
        "windows" => return Err("the windows adapter runs only on Windows".into()),
        _ => match &args.log_file {
            None => Box::new(crate::agent::adapter::LogAdapter::new(
                Box::new(std::io::stdout()),
                clock.clone(),
            )),
            Some(path) => {
                let f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
                Box::new(crate::agent::adapter::LogAdapter::new(
                    Box::new(f),
                    clock.clone(),
                ))
            }
        },
    };
    let overlay: Option<Box<dyn crate::agent::overlay::link::Launcher>> = if args.overlay {
        let extra = args
            .font
            .iter()
            .flat_map(|f| ["--font".to_owned(), f.display().to_string()])
            .collect();
        Some(Box::new(
            crate::agent::overlay::link::ProcessLauncher::this_exe(extra)?,
        ))
    } else {
        None
    };
    Ok(Prepared {
        dir,
        adapter,
        clock,
        opts: crate::agent::run::Options {
            wall_offset: jiff::SignedDuration::from_secs(args.wall_offset_secs),
            mqtt_port: args.mqtt_port,
            overlay,
        },
    })
}

fn agent_run(args: RunArgs) -> ExitCode {
    crate::logging::init("info", crate::config::LogFormat::Auto);
    let p = match prepare(args) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let Some(runtime) = crate::runtime::build(&mut tokio::runtime::Builder::new_current_thread())
    else {
        return ExitCode::FAILURE;
    };
    let result = runtime.block_on(async {
        crate::agent::run::run(&p.dir, p.adapter, p.clock, p.opts, stop_signal()).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Ctrl-C, or SIGTERM from systemd.
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
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
