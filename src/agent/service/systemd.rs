//! The agent as a systemd unit.
//!
//! Without the overlay it is a system unit (`/etc/systemd/system/venued-agent.service`)
//! running as root, acting on the desktop session through logind. With the overlay it is a
//! user unit of the desktop's user (`~/.config/systemd/user/`), started with the graphical
//! session, because only that user may draw on the display.

use super::super::cli::InstallArgs;
use std::path::{Path, PathBuf};

pub const UNIT: &str = "venued-agent.service";

/// The unit file's text.
pub fn unit(exe: &Path, dir: &Path, adapter: &str, overlay: bool) -> String {
    let quote = |p: &Path| {
        let s = p.display().to_string();
        if s.contains(char::is_whitespace) {
            format!("\"{s}\"")
        } else {
            s
        }
    };
    let mut exec = format!(
        "{} agent run --dir {} --adapter {adapter}",
        quote(exe),
        quote(dir)
    );
    if overlay {
        exec.push_str(" --overlay");
    }
    let (after, wanted_by) = if overlay {
        ("graphical-session.target", "graphical-session.target")
    } else {
        ("network-online.target", "multi-user.target")
    };
    format!(
        "# Written by `venued agent install-service`; removed by `uninstall-service`.\n\
         [Unit]\n\
         Description=venued PC agent (enforces paid sessions, also offline)\n\
         After={after}\n\
         Wants={after}\n\
         \n\
         [Service]\n\
         ExecStart={exec}\n\
         Restart=always\n\
         RestartSec=2\n\
         \n\
         [Install]\n\
         WantedBy={wanted_by}\n"
    )
}

/// Where a user unit goes: $XDG_CONFIG_HOME/systemd/user or ~/.config/systemd/user.
fn user_unit_dir() -> Result<PathBuf, String> {
    if let Some(x) = std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(x).join("systemd/user"));
    }
    std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".config/systemd/user"))
        .ok_or_else(|| "neither XDG_CONFIG_HOME nor HOME is set".to_owned())
}

fn systemctl(user: bool, args: &[&str]) -> Result<(), String> {
    let mut cmd = std::process::Command::new("systemctl");
    if user {
        cmd.arg("--user");
    }
    let status = cmd
        .args(args)
        .stdin(std::process::Stdio::null())
        .status()
        .map_err(|e| format!("cannot run systemctl: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("systemctl {} failed: {status}", args.join(" ")))
    }
}

pub fn install(args: &InstallArgs) -> Result<String, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(crate::agent::enroll::default_dir);
    if !dir.join("agent.json").exists() {
        return Err(format!(
            "{} has no agent.json: run `venued agent enroll` first",
            dir.display()
        ));
    }
    let user = args.overlay;
    let unit_dir = if user && args.unit_dir == Path::new("/etc/systemd/system") {
        user_unit_dir()?
    } else {
        args.unit_dir.clone()
    };
    std::fs::create_dir_all(&unit_dir)
        .map_err(|e| format!("cannot create {}: {e}", unit_dir.display()))?;
    let path = unit_dir.join(UNIT);
    std::fs::write(&path, unit(&exe, &dir, &args.adapter, args.overlay))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    if args.no_systemctl {
        return Ok(format!("wrote {} (systemctl not called)", path.display()));
    }
    systemctl(user, &["daemon-reload"])?;
    systemctl(user, &["enable", "--now", UNIT])?;
    Ok(format!(
        "installed and started {} ({}); `venued agent status` shows what it does",
        path.display(),
        if user { "user unit" } else { "system unit" }
    ))
}

pub fn uninstall(unit_dir: &Path, no_systemctl: bool) -> Result<String, String> {
    let mut candidates = vec![unit_dir.join(UNIT)];
    if unit_dir == Path::new("/etc/systemd/system")
        && let Ok(u) = user_unit_dir()
    {
        candidates.push(u.join(UNIT));
    }
    let mut removed = Vec::new();
    for (i, path) in candidates.iter().enumerate() {
        if !path.exists() {
            continue;
        }
        let user = i == 1;
        if !no_systemctl {
            systemctl(user, &["disable", "--now", UNIT])?;
        }
        std::fs::remove_file(path).map_err(|e| format!("cannot remove {}: {e}", path.display()))?;
        if !no_systemctl {
            systemctl(user, &["daemon-reload"])?;
        }
        removed.push(path.display().to_string());
    }
    if removed.is_empty() {
        return Err(format!(
            "no {UNIT} installed (looked in {})",
            unit_dir.display()
        ));
    }
    Ok(format!("stopped and removed {}", removed.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unit_runs_the_agent_and_restarts_it() {
        let u = unit(
            Path::new("/usr/bin/venued"),
            Path::new("/etc/venued-agent"),
            "loginctl",
            false,
        );
        assert!(u.contains(
            "ExecStart=/usr/bin/venued agent run --dir /etc/venued-agent --adapter loginctl\n"
        ));
        assert!(u.contains("Restart=always"));
        assert!(u.contains("WantedBy=multi-user.target"));
        let o = unit(
            Path::new("/opt/my tools/venued"),
            Path::new("/home/k/.config/venued-agent"),
            "log",
            true,
        );
        assert!(o.contains("ExecStart=\"/opt/my tools/venued\" agent run"));
        assert!(o.contains("--overlay\n"));
        assert!(o.contains("WantedBy=graphical-session.target"));
    }
}
