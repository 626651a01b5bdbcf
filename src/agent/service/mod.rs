//! `venued agent install-service` / `uninstall-service`: the agent as a service the OS
//! starts at boot and restarts when it dies (systemd on Linux, the service manager on
//! Windows).

use super::cli::InstallArgs;
use std::path::Path;

#[cfg(unix)]
pub mod systemd;

/// Install and start the service; what was done, for the operator.
pub fn install(args: &InstallArgs) -> Result<String, String> {
    #[cfg(unix)]
    return systemd::install(args);
    #[cfg(windows)]
    return crate::agent::windows::service::install(args);
}

/// Stop and remove the service.
pub fn uninstall(unit_dir: &Path, no_systemctl: bool) -> Result<String, String> {
    #[cfg(unix)]
    return systemd::uninstall(unit_dir, no_systemctl);
    #[cfg(windows)]
    {
        let _ = (unit_dir, no_systemctl);
        crate::agent::windows::service::uninstall()
    }
}
