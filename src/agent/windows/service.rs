//! The agent as a Windows service (`venued-agent`), and its installation.
//!
//! The service manager starts `venued agent service --dir <dir>` as LocalSystem at boot
//! and restarts it when it dies: the agent must enforce sessions whoever is logged on,
//! from before anyone is. It runs the same `agent run` loop as on Linux with the
//! `windows` adapter, and starts the overlay helper in the console user's session through
//! [`WtsLauncher`]. A service has no console, so it logs to `<dir>\agent.log`.

use super::launcher::WtsLauncher;
use crate::agent::cli::{InstallArgs, RunArgs};
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use windows_service::service::{
    ServiceAccess, ServiceAction, ServiceActionType, ServiceControl, ServiceControlAccept,
    ServiceErrorControl, ServiceExitCode, ServiceFailureActions, ServiceFailureResetPeriod,
    ServiceInfo, ServiceStartType, ServiceState, ServiceStatus, ServiceType,
};
use windows_service::service_control_handler::{
    self, ServiceControlHandlerResult, ServiceStatusHandle,
};
use windows_service::service_manager::{ServiceManager, ServiceManagerAccess};
use windows_service::{define_windows_service, service_dispatcher};
use windows_sys::Win32::Foundation::{
    ERROR_ACCESS_DENIED, ERROR_FAILED_SERVICE_CONTROLLER_CONNECT, ERROR_SERVICE_DOES_NOT_EXIST,
    ERROR_SERVICE_EXISTS, ERROR_SERVICE_MARKED_FOR_DELETE, ERROR_SERVICE_NOT_ACTIVE,
};

/// The service's name (`sc query venued-agent`).
pub const SERVICE: &str = "venued-agent";
const DISPLAY_NAME: &str = "venued PC agent";
const DESCRIPTION: &str = "Enforces this PC's paid sessions for the venue's venued box \
                           (lock screen, countdown, log off), also while the box is offline.";
/// How long a stop may take: the agent publishes its offline status and disconnects.
const STOP_HINT: Duration = Duration::from_secs(10);
/// The log is moved to `agent.log.1` past this size, when the service starts.
const LOG_LIMIT: u64 = 10 * 1024 * 1024;

/// The `--dir` of `venued agent service`, for the service's main function, which the
/// dispatcher calls without context on a thread of its own.
static SERVICE_DIR: OnceLock<Option<PathBuf>> = OnceLock::new();

/// `venued agent service [--dir]`: hand this process to the service manager, which runs
/// the agent in it until the service is stopped.
pub fn dispatch(dir: Option<PathBuf>) -> Result<String, String> {
    let _ = SERVICE_DIR.set(dir);
    service_dispatcher::start(SERVICE, ffi_service_main).map_err(|e| {
        if code(&e) == Some(ERROR_FAILED_SERVICE_CONTROLLER_CONNECT) {
            "`venued agent service` is started by the Windows service manager: install it \
             with `venued agent install-service`, or run `venued agent run` in a console"
                .to_owned()
        } else {
            format!("cannot start the service dispatcher: {e}")
        }
    })?;
    Ok(format!("the {SERVICE} service stopped"))
}

define_windows_service!(ffi_service_main, service_main);

/// The service's main function, on the dispatcher's thread; returns once it is stopped.
fn service_main(_arguments: Vec<OsString>) {
    let dir = SERVICE_DIR
        .get()
        .cloned()
        .flatten()
        .unwrap_or_else(crate::agent::enroll::default_dir);
    init_log(&dir);
    tracing::info!(dir = %dir.display(), version = env!("CARGO_PKG_VERSION"), "service starting");
    match run_service(dir) {
        Ok(()) => tracing::info!("service stopped"),
        Err(e) => tracing::error!(error = %e, "service failed"),
    }
}

fn run_service(dir: PathBuf) -> Result<(), String> {
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let mut stop_tx = Some(stop_tx);
    // The handler reports "stopping" itself, so it needs the handle registering returns.
    let handle: Arc<OnceLock<ServiceStatusHandle>> = Arc::default();
    let handler_handle = handle.clone();
    let handler = move |control| match control {
        ServiceControl::Stop | ServiceControl::Shutdown => {
            tracing::info!(?control, "the service manager asks the agent to stop");
            if let Some(h) = handler_handle.get() {
                let _ = h.set_service_status(status(
                    ServiceState::StopPending,
                    ServiceExitCode::NO_ERROR,
                    STOP_HINT,
                ));
            }
            if let Some(tx) = stop_tx.take() {
                let _ = tx.send(());
            }
            ServiceControlHandlerResult::NoError
        }
        ServiceControl::Interrogate => ServiceControlHandlerResult::NoError,
        _ => ServiceControlHandlerResult::NotImplemented,
    };
    let registered = service_control_handler::register(SERVICE, handler)
        .map_err(|e| format!("cannot register with the service manager: {e}"))?;
    let _ = handle.set(registered);
    let outcome = serve(dir, registered, async move {
        let _ = stop_rx.await;
    });
    let exit = match outcome {
        Ok(()) => ServiceExitCode::NO_ERROR,
        // Non-zero: the service manager's failure actions (restart) apply.
        Err(_) => ServiceExitCode::ServiceSpecific(1),
    };
    registered
        .set_service_status(status(ServiceState::Stopped, exit, Duration::ZERO))
        .map_err(|e| format!("cannot report the service stopped: {e}"))?;
    outcome
}

/// Build the agent as `agent run --adapter windows` would, with the overlay started in
/// the console session, report the service running and run it until `stop`.
fn serve(
    dir: PathBuf,
    handle: ServiceStatusHandle,
    stop: impl Future<Output = ()>,
) -> Result<(), String> {
    let mut prepared = crate::agent::cli::prepare(RunArgs {
        dir: Some(dir),
        adapter: "windows".into(),
        session: None,
        log_file: None,
        command: None,
        overlay: false,
        font: None,
        mqtt_port: None,
        wall_offset_secs: 0,
    })?;
    prepared.opts.overlay = Some(Box::new(WtsLauncher::new(
        Vec::new(),
        Some(prepared.dir.join("overlay.log")),
    )?));
    // Current-thread: every adapter call happens on this one thread, which the
    // sleep-prevention state (per thread) relies on.
    let runtime = crate::runtime::build(&mut tokio::runtime::Builder::new_current_thread())
        .ok_or("cannot start the async runtime")?;
    handle
        .set_service_status(status(
            ServiceState::Running,
            ServiceExitCode::NO_ERROR,
            Duration::ZERO,
        ))
        .map_err(|e| format!("cannot report the service running: {e}"))?;
    let p = prepared;
    runtime.block_on(crate::agent::run::run(
        &p.dir, p.adapter, p.clock, p.opts, stop,
    ))
}

fn status(state: ServiceState, exit_code: ServiceExitCode, wait_hint: Duration) -> ServiceStatus {
    let controls_accepted = match state {
        ServiceState::Running => ServiceControlAccept::STOP | ServiceControlAccept::SHUTDOWN,
        _ => ServiceControlAccept::empty(),
    };
    ServiceStatus {
        service_type: ServiceType::OWN_PROCESS,
        current_state: state,
        controls_accepted,
        exit_code,
        checkpoint: 0,
        wait_hint,
        process_id: None,
    }
}

/// Logs to `<dir>\agent.log` (text lines; `VENUED_LOG` sets the filter), and panics too:
/// a panic on the service's thread ends the process, and this is the only trace of why.
fn init_log(dir: &Path) {
    let path = dir.join("agent.log");
    if std::fs::metadata(&path).is_ok_and(|m| m.len() > LOG_LIMIT) {
        let _ = std::fs::rename(&path, path.with_extension("log.1"));
    }
    let Ok(file) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
    else {
        // Nowhere to write: the service still runs, and its exit code reaches the
        // service manager's event log.
        return;
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("VENUED_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rumqttd=warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_target(false)
        .with_writer(Mutex::new(file))
        .try_init();
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        tracing::error!(panic = %info, "the agent service panicked");
        previous(info);
    }));
}

/// `venued agent install-service` on Windows: create the `venued-agent` service (started
/// at boot as LocalSystem, restarted 2 s after any failure) and start it.
///
/// The Linux options (`--adapter`, `--unit-dir`, `--no-systemctl`, `--overlay`) do not
/// apply: the service always uses the `windows` adapter and the overlay.
pub fn install(args: &InstallArgs) -> Result<String, String> {
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(crate::agent::enroll::default_dir);
    // The service starts in System32: a relative --dir would point there.
    let dir =
        std::path::absolute(&dir).map_err(|e| format!("cannot resolve {}: {e}", dir.display()))?;
    let creds = dir.join("agent.json");
    if !creds.is_file() {
        return Err(format!(
            "{} is missing: run `venued agent enroll` first",
            creds.display()
        ));
    }
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    let manager = ServiceManager::local_computer(
        None::<&str>,
        ServiceManagerAccess::CONNECT | ServiceManagerAccess::CREATE_SERVICE,
    )
    .map_err(|e| manager_error(&e))?;
    let info = ServiceInfo {
        name: OsString::from(SERVICE),
        display_name: OsString::from(DISPLAY_NAME),
        service_type: ServiceType::OWN_PROCESS,
        start_type: ServiceStartType::AutoStart,
        error_control: ServiceErrorControl::Normal,
        executable_path: exe.clone(),
        launch_arguments: vec![
            OsString::from("agent"),
            OsString::from("service"),
            OsString::from("--dir"),
            dir.clone().into_os_string(),
        ],
        dependencies: Vec::new(),
        // LocalSystem: it alone may start a process in the user's session and log it off.
        account_name: None,
        account_password: None,
    };
    let service = manager
        .create_service(
            &info,
            ServiceAccess::CHANGE_CONFIG | ServiceAccess::START | ServiceAccess::QUERY_STATUS,
        )
        .map_err(|e| match code(&e) {
            Some(ERROR_SERVICE_EXISTS) => format!(
                "the {SERVICE} service is already installed (`venued agent uninstall-service` \
                 removes it, to install it anew)"
            ),
            Some(ERROR_SERVICE_MARKED_FOR_DELETE) => format!(
                "the {SERVICE} service is still being removed: close the Services console \
                 (or restart the PC) and try again"
            ),
            _ => format!("cannot create the {SERVICE} service: {e}"),
        })?;
    let half = |what: &str, e: windows_service::Error| {
        format!(
            "the {SERVICE} service was created but {what} failed: {e} (`venued agent \
             uninstall-service` removes it)"
        )
    };
    service
        .set_description(DESCRIPTION)
        .map_err(|e| half("setting its description", e))?;
    // Restart 2 s after each failure; past the third, Windows repeats the last action, so
    // it is restarted for good. A day without failure resets the count.
    let restart = ServiceAction {
        action_type: ServiceActionType::Restart,
        delay: Duration::from_secs(2),
    };
    service
        .update_failure_actions(ServiceFailureActions {
            reset_period: ServiceFailureResetPeriod::After(Duration::from_secs(24 * 3600)),
            reboot_msg: None,
            command: None,
            actions: Some(vec![restart.clone(), restart.clone(), restart]),
        })
        .map_err(|e| half("setting its failure actions", e))?;
    // Also when it exits with an error code rather than crashing (e.g. agent.json broken
    // for a moment).
    service
        .set_failure_actions_on_non_crash_failures(true)
        .map_err(|e| half("setting its failure actions", e))?;
    service
        .start(&[] as &[&OsStr])
        .map_err(|e| half("starting it", e))?;
    Ok(format!(
        "installed and started the Windows service {SERVICE} (\"{}\" agent service --dir \"{}\"), \
         started at boot as LocalSystem; logs in {}",
        exe.display(),
        dir.display(),
        dir.join("agent.log").display()
    ))
}

/// `venued agent uninstall-service` on Windows: stop the service (waiting up to 10 s) and
/// delete it.
pub fn uninstall() -> Result<String, String> {
    let manager = ServiceManager::local_computer(None::<&str>, ServiceManagerAccess::CONNECT)
        .map_err(|e| manager_error(&e))?;
    let service = manager
        .open_service(
            SERVICE,
            ServiceAccess::QUERY_STATUS | ServiceAccess::STOP | ServiceAccess::DELETE,
        )
        .map_err(|e| match code(&e) {
            Some(ERROR_SERVICE_DOES_NOT_EXIST) => {
                format!("the {SERVICE} service is not installed")
            }
            Some(ERROR_ACCESS_DENIED) => {
                format!("not allowed to remove the {SERVICE} service: run this as an administrator")
            }
            _ => format!("cannot open the {SERVICE} service: {e}"),
        })?;
    let state = |s: &windows_service::service::Service| {
        s.query_status()
            .map(|st| st.current_state)
            .map_err(|e| format!("cannot query the {SERVICE} service: {e}"))
    };
    let mut stopped = state(&service)? == ServiceState::Stopped;
    if !stopped {
        match service.stop() {
            Ok(_) => {}
            Err(e) if code(&e) == Some(ERROR_SERVICE_NOT_ACTIVE) => {}
            Err(e) => return Err(format!("cannot stop the {SERVICE} service: {e}")),
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if state(&service)? == ServiceState::Stopped {
                stopped = true;
                break;
            }
            // A plain command-line program, no async runtime to block.
            #[allow(clippy::disallowed_methods)]
            std::thread::sleep(Duration::from_millis(250));
        }
    }
    service.delete().map_err(|e| match code(&e) {
        Some(ERROR_SERVICE_MARKED_FOR_DELETE) => {
            format!("the {SERVICE} service is already being removed")
        }
        _ => format!("cannot delete the {SERVICE} service: {e}"),
    })?;
    Ok(if stopped {
        format!("stopped and removed the Windows service {SERVICE}")
    } else {
        format!(
            "removed the Windows service {SERVICE}; it did not stop within 10 s and goes \
             once it does"
        )
    })
}

/// The Win32 error code inside a windows-service error, if it is one.
fn code(e: &windows_service::Error) -> Option<u32> {
    match e {
        windows_service::Error::Winapi(io) => io.raw_os_error().map(|c| c as u32),
        _ => None,
    }
}

fn manager_error(e: &windows_service::Error) -> String {
    if code(e) == Some(ERROR_ACCESS_DENIED) {
        "not allowed to manage services: run this from an administrator prompt".to_owned()
    } else {
        format!("cannot connect to the service manager: {e}")
    }
}
