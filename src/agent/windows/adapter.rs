//! The `windows` adapter: what the enforcer decides, done to a Windows PC by the service.
//!
//! The service runs as LocalSystem in session 0, so it may log off the console user, shut
//! the machine down and hold a power request. Locking is not done here: on Windows the
//! lock *is* the overlay helper's full-screen kiosk page (the Windows lock screen would
//! let the customer log straight back in with their own password, and offers no member
//! login), and warnings and staff messages are the overlay's band colour and message line.

use super::{last_error, owned, with_code};
use crate::agent::adapter::Adapter;
use crate::agent::enforcer::Action;
use std::os::windows::io::AsRawHandle;
use windows_sys::Win32::Foundation::{ERROR_NOT_ALL_ASSIGNED, GetLastError, HANDLE, LUID};
use windows_sys::Win32::Security::{
    AdjustTokenPrivileges, LUID_AND_ATTRIBUTES, LookupPrivilegeValueW, SE_PRIVILEGE_ENABLED,
    SE_SHUTDOWN_NAME, TOKEN_ADJUST_PRIVILEGES, TOKEN_PRIVILEGES, TOKEN_QUERY,
};
use windows_sys::Win32::System::Power::{
    ES_CONTINUOUS, ES_DISPLAY_REQUIRED, ES_SYSTEM_REQUIRED, SetThreadExecutionState,
};
use windows_sys::Win32::System::RemoteDesktop::{
    WTS_CURRENT_SERVER_HANDLE, WTSFreeMemory, WTSGetActiveConsoleSessionId, WTSLogoffSession,
    WTSQuerySessionInformationW, WTSUserName,
};
use windows_sys::Win32::System::Shutdown::{
    InitiateShutdownW, SHTDN_REASON_FLAG_PLANNED, SHTDN_REASON_MAJOR_OTHER,
    SHTDN_REASON_MINOR_OTHER, SHUTDOWN_FORCE_OTHERS, SHUTDOWN_FORCE_SELF, SHUTDOWN_POWEROFF,
    SHUTDOWN_RESTART,
};
use windows_sys::Win32::System::Threading::{GetCurrentProcess, OpenProcessToken};

/// `WTSGetActiveConsoleSessionId` when no session is attached to the console (during a
/// user switch).
pub(super) const NO_CONSOLE_SESSION: u32 = 0xFFFF_FFFF;

#[derive(Debug, Default)]
pub struct WindowsAdapter {
    /// Whether this thread holds the "keep awake" execution state.
    awake: bool,
}

impl WindowsAdapter {
    pub fn new() -> Self {
        Self::default()
    }
}

impl Adapter for WindowsAdapter {
    fn apply(&mut self, action: &Action) -> Result<(), String> {
        match action {
            // The lock is the overlay's kiosk page over everything (see the module doc):
            // nothing for the OS to do, and the page goes as soon as the agent says unlock.
            Action::Lock | Action::Unlock => Ok(()),
            // Shown by the overlay: the band colour and the message line.
            Action::Warn { .. } | Action::ShowMessage(_) => Ok(()),
            // Acknowledgements go to the controller, never to an adapter.
            Action::Ack { .. } => Ok(()),
            Action::LogOff => log_off(),
            Action::Shutdown => shut_down(SHUTDOWN_POWEROFF),
            Action::Restart => shut_down(SHUTDOWN_RESTART),
            Action::PreventSleep(on) => {
                prevent_sleep(*on)?;
                self.awake = *on;
                Ok(())
            }
        }
    }
}

impl Drop for WindowsAdapter {
    fn drop(&mut self) {
        // The state goes with the thread anyway; clearing it says so in the power requests
        // (`powercfg /requests`) as soon as the agent stops, not when its thread ends.
        if self.awake {
            let _ = prevent_sleep(false);
        }
    }
}

/// Log off whoever is on the console, without waiting for it to finish.
fn log_off() -> Result<(), String> {
    // SAFETY: no arguments; returns a session id or 0xFFFFFFFF.
    let session = unsafe { WTSGetActiveConsoleSessionId() };
    if session == NO_CONSOLE_SESSION {
        tracing::info!("no session on the console: nobody to log off");
        return Ok(());
    }
    if console_user(session)?.is_empty() {
        // The console shows the Windows sign-in screen: already logged off.
        tracing::info!("nobody is logged on the console");
        return Ok(());
    }
    // SAFETY: plain values; the local server's pseudo-handle needs no opening or closing.
    // bWait = FALSE: return at once, Windows closes the session's programs meanwhile.
    let ok = unsafe { WTSLogoffSession(WTS_CURRENT_SERVER_HANDLE, session, 0) };
    if ok == 0 {
        return Err(last_error("WTSLogoffSession"));
    }
    Ok(())
}

/// The user name of `session` (empty when nobody is logged on there).
fn console_user(session: u32) -> Result<String, String> {
    let mut buffer: *mut u16 = std::ptr::null_mut();
    let mut bytes = 0u32;
    // SAFETY: both out-pointers point to live locals; on success Windows allocates the
    // buffer, which is freed below with WTSFreeMemory and not used after.
    let ok = unsafe {
        WTSQuerySessionInformationW(
            WTS_CURRENT_SERVER_HANDLE,
            session,
            WTSUserName,
            &mut buffer,
            &mut bytes,
        )
    };
    if ok == 0 || buffer.is_null() {
        return Err(last_error("WTSQuerySessionInformationW"));
    }
    let units = (bytes as usize / 2).saturating_sub(1);
    // SAFETY: Windows returned `bytes` bytes of UTF-16 at `buffer` (NUL included), valid
    // until WTSFreeMemory; the slice is copied into a String before that.
    let name = String::from_utf16_lossy(unsafe { std::slice::from_raw_parts(buffer, units) });
    // SAFETY: `buffer` came from WTSQuerySessionInformationW and is freed once.
    unsafe { WTSFreeMemory(buffer.cast()) };
    Ok(name.trim_end_matches('\0').to_owned())
}

/// Power off or restart now, closing every session's programs without asking (staff
/// decided; a game's "save changes?" dialog must not hold the PC up).
fn shut_down(how: u32) -> Result<(), String> {
    enable_shutdown_privilege()?;
    // Other users' sessions (the customer's, from the service's point of view) and our own
    // are closed by force; otherwise the call fails while anyone is logged on.
    let flags = how | SHUTDOWN_FORCE_OTHERS | SHUTDOWN_FORCE_SELF;
    // The event log says why: planned, "other" (a venue staff command).
    let reason = SHTDN_REASON_MAJOR_OTHER | SHTDN_REASON_MINOR_OTHER | SHTDN_REASON_FLAG_PLANNED;
    // SAFETY: null machine name (this PC) and message are allowed; the rest are values.
    let code = unsafe { InitiateShutdownW(std::ptr::null(), std::ptr::null(), 0, flags, reason) };
    if code != 0 {
        return Err(with_code("InitiateShutdownW", code));
    }
    Ok(())
}

/// LocalSystem holds SeShutdownPrivilege but, like any privilege, disabled until asked
/// for; InitiateShutdownW fails without it.
fn enable_shutdown_privilege() -> Result<(), String> {
    let mut raw: HANDLE = std::ptr::null_mut();
    // SAFETY: GetCurrentProcess returns a pseudo-handle (never closed); `raw` is a live
    // out-pointer.
    let ok = unsafe {
        OpenProcessToken(
            GetCurrentProcess(),
            TOKEN_ADJUST_PRIVILEGES | TOKEN_QUERY,
            &mut raw,
        )
    };
    if ok == 0 {
        return Err(last_error("OpenProcessToken"));
    }
    // SAFETY: OpenProcessToken succeeded, so `raw` is a new token handle we alone own.
    let Some(token) = (unsafe { owned(raw) }) else {
        return Err("OpenProcessToken returned no token".into());
    };
    let mut luid = LUID {
        LowPart: 0,
        HighPart: 0,
    };
    // SAFETY: null system name (this PC); SE_SHUTDOWN_NAME is a static NUL-terminated
    // wide string; `luid` is a live out-pointer.
    if unsafe { LookupPrivilegeValueW(std::ptr::null(), SE_SHUTDOWN_NAME, &mut luid) } == 0 {
        return Err(last_error("LookupPrivilegeValueW"));
    }
    let privileges = TOKEN_PRIVILEGES {
        PrivilegeCount: 1,
        Privileges: [LUID_AND_ATTRIBUTES {
            Luid: luid,
            Attributes: SE_PRIVILEGE_ENABLED,
        }],
    };
    // SAFETY: `token` is open with TOKEN_ADJUST_PRIVILEGES; `privileges` is a valid
    // one-entry TOKEN_PRIVILEGES; no previous state is asked for (null, 0).
    let ok = unsafe {
        AdjustTokenPrivileges(
            token.as_raw_handle(),
            0,
            &privileges,
            0,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
    };
    // It "succeeds" without enabling a privilege the token lacks: that is in the last error.
    // SAFETY: GetLastError only reads the thread's last-error value.
    let code = unsafe { GetLastError() };
    if ok == 0 {
        return Err(with_code("AdjustTokenPrivileges", code));
    }
    if code == ERROR_NOT_ALL_ASSIGNED {
        return Err(
            "AdjustTokenPrivileges: this account lacks SeShutdownPrivilege (the service runs \
             as LocalSystem, which has it)"
                .into(),
        );
    }
    Ok(())
}

/// Hold (or release) a power request keeping the system and the display on.
///
/// The execution state belongs to the calling thread. The agent runs on a current-thread
/// tokio runtime, so `apply` is always called on that one thread and the state set here
/// is the one cleared later.
fn prevent_sleep(on: bool) -> Result<(), String> {
    let state = if on {
        ES_CONTINUOUS | ES_SYSTEM_REQUIRED | ES_DISPLAY_REQUIRED
    } else {
        ES_CONTINUOUS
    };
    // SAFETY: a flags value; affects only this thread's execution state.
    if unsafe { SetThreadExecutionState(state) } == 0 {
        return Err(last_error("SetThreadExecutionState"));
    }
    Ok(())
}
