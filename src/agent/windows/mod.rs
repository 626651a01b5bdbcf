//! The PC agent on Windows: the service, its OS adapter and the overlay helper's window.
//!
//! The agent runs as a LocalSystem service in session 0, which can act on the machine
//! (log off, shut down, keep it awake) but cannot draw on the customer's desktop. So
//! [`service`] runs the agent, [`adapter`] carries out its actions, [`launcher`] starts
//! `venued agent overlay` in the session of whoever sits at the console, and [`display`]
//! is that helper's window (lock page and countdown). Everything here is raw Win32 through
//! `windows-sys`; the only other Windows crate is `windows-service` for the service
//! manager's protocol.
//!
//! None of it can run on the Linux build machines: it is compile-, lint- and link-checked
//! by `scripts/cross-check.sh`, and docs/agent.md lists what still needs a real PC.

pub mod adapter;
pub mod display;
pub mod launcher;
pub mod service;

use std::ffi::OsStr;
use std::os::windows::ffi::OsStrExt;
use std::os::windows::io::{FromRawHandle, OwnedHandle};
use windows_sys::Win32::Foundation::{GetLastError, HANDLE};

/// `what` failed: its name and the thread's last error code, as Win32 reports it.
fn last_error(what: &str) -> String {
    // SAFETY: GetLastError only reads the calling thread's last-error value.
    let code = unsafe { GetLastError() };
    with_code(what, code)
}

/// `what` failed with the Win32 error `code` (also used for functions that return it).
fn with_code(what: &str, code: u32) -> String {
    let text = std::io::Error::from_raw_os_error(code as i32);
    format!("{what} failed: {text}")
}

/// `s` as a NUL-terminated UTF-16 string for a `PCWSTR` argument.
fn wide(s: impl AsRef<OsStr>) -> Vec<u16> {
    s.as_ref().encode_wide().chain(std::iter::once(0)).collect()
}

/// Take ownership of a handle a Win32 call just returned, so it is closed exactly once
/// (by `OwnedHandle`'s drop). `None` for a null handle.
///
/// # Safety
/// `handle` must be a valid handle that nothing else owns or closes.
unsafe fn owned(handle: HANDLE) -> Option<OwnedHandle> {
    if handle.is_null() {
        None
    } else {
        // SAFETY: the caller guarantees `handle` is valid and owned by no one else.
        Some(unsafe { OwnedHandle::from_raw_handle(handle) })
    }
}
