//! Start the overlay helper in the console user's session, from the service in session 0.
//!
//! A service's own processes live in session 0, which has no visible desktop since
//! Windows Vista. To draw on the customer's screen the helper must run in their session,
//! on their desktop (`winsta0\default`) and as them: the service asks Terminal Services
//! for the console user's token (only LocalSystem may), builds that user's environment
//! from it, adds the link token, and creates the process with it. The helper's output
//! goes to `overlay.log` beside the agent's files, the only trace it leaves when it fails
//! where nobody watches.
//!
//! Used only by the service; `venued agent run --overlay` in one's own session uses
//! [`ProcessLauncher`](crate::agent::overlay::link::ProcessLauncher).

use super::adapter::NO_CONSOLE_SESSION;
use super::{last_error, owned, wide};
use crate::agent::overlay::ipc::TOKEN_ENV;
use crate::agent::overlay::link::{Helper, Launcher};
use std::ffi::OsStr;
use std::net::SocketAddr;
use std::os::windows::ffi::OsStrExt;
use std::os::windows::io::{AsRawHandle, OwnedHandle};
use std::path::{Path, PathBuf};
use windows_sys::Win32::Foundation::{
    ERROR_NO_TOKEN, ERROR_PRIVILEGE_NOT_HELD, GetLastError, HANDLE, HANDLE_FLAG_INHERIT,
    SetHandleInformation, WAIT_TIMEOUT,
};
use windows_sys::Win32::Security::{
    DuplicateTokenEx, SecurityImpersonation, TOKEN_ALL_ACCESS, TokenPrimary,
};
use windows_sys::Win32::System::Environment::{CreateEnvironmentBlock, DestroyEnvironmentBlock};
use windows_sys::Win32::System::RemoteDesktop::{WTSGetActiveConsoleSessionId, WTSQueryUserToken};
use windows_sys::Win32::System::Threading::{
    CREATE_NO_WINDOW, CREATE_UNICODE_ENVIRONMENT, CreateProcessAsUserW,
    DeleteProcThreadAttributeList, EXTENDED_STARTUPINFO_PRESENT, InitializeProcThreadAttributeList,
    LPPROC_THREAD_ATTRIBUTE_LIST, PROC_THREAD_ATTRIBUTE_HANDLE_LIST, PROCESS_INFORMATION,
    STARTF_USESTDHANDLES, STARTUPINFOEXW, STARTUPINFOW, TerminateProcess,
    UpdateProcThreadAttribute, WaitForSingleObject,
};

/// Set (to "1") in the environment of a helper this launcher starts: it then leaves when
/// its session is no longer the console's (fast user switching), so the agent starts a
/// new one where the customer now is. A helper started by hand stays where it is.
pub const FOLLOW_CONSOLE_ENV: &str = "VENUED_OVERLAY_FOLLOW_CONSOLE";

/// `overlay.log` is moved to `overlay.log.1` past this size, at a helper's start.
const LOG_LIMIT: u64 = 5 * 1024 * 1024;

/// Starts `<program> <args> --connect <addr>` as the console user, in their session.
#[derive(Debug)]
pub struct WtsLauncher {
    program: PathBuf,
    args: Vec<String>,
    /// Where the helper's output goes (none: nowhere).
    log: Option<PathBuf>,
}

impl WtsLauncher {
    /// This executable's `venued agent overlay`, with `extra` arguments (e.g. `--font`),
    /// its output appended to `log`.
    pub fn new(extra: Vec<String>, log: Option<PathBuf>) -> Result<Self, String> {
        let program =
            std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
        let mut args = vec!["agent".to_owned(), "overlay".to_owned()];
        args.extend(extra);
        Ok(Self { program, args, log })
    }
}

impl Launcher for WtsLauncher {
    fn launch(&mut self, addr: SocketAddr, token: &str) -> Result<Box<dyn Helper>, String> {
        let user = console_user_token()?;
        let mut environment = user_environment(&user)?;
        environment.set(TOKEN_ENV, token);
        environment.set(FOLLOW_CONSOLE_ENV, "1");
        let mut args = self.args.clone();
        args.extend(["--connect".to_owned(), addr.to_string()]);
        let log = self.log.as_deref().and_then(open_log);
        let helper = create_process(
            &user,
            &self.program,
            &args,
            &environment.block(),
            log.as_ref(),
        )?;
        Ok(Box::new(helper))
    }
}

/// A primary token of the user logged on the console.
fn console_user_token() -> Result<OwnedHandle, String> {
    // SAFETY: no arguments; returns a session id or 0xFFFFFFFF.
    let session = unsafe { WTSGetActiveConsoleSessionId() };
    if session == NO_CONSOLE_SESSION {
        return Err("no session is attached to the console (users are being switched)".into());
    }
    let mut raw: HANDLE = std::ptr::null_mut();
    // SAFETY: `raw` is a live out-pointer; on success it receives a new token handle.
    if unsafe { WTSQueryUserToken(session, &mut raw) } == 0 {
        // SAFETY: GetLastError only reads the thread's last-error value.
        return Err(match unsafe { GetLastError() } {
            ERROR_NO_TOKEN => "no user is logged on the console yet".to_owned(),
            ERROR_PRIVILEGE_NOT_HELD => "WTSQueryUserToken needs the LocalSystem account: \
                                         only the Windows service can start the overlay in \
                                         another session"
                .to_owned(),
            code => super::with_code("WTSQueryUserToken", code),
        });
    }
    // SAFETY: WTSQueryUserToken succeeded: `raw` is a token handle we alone own.
    let token = unsafe { owned(raw) }.ok_or("WTSQueryUserToken returned no token")?;
    let mut primary: HANDLE = std::ptr::null_mut();
    // SAFETY: `token` is open; no security attributes (default, not inheritable);
    // `primary` is a live out-pointer.
    let ok = unsafe {
        DuplicateTokenEx(
            token.as_raw_handle(),
            TOKEN_ALL_ACCESS,
            std::ptr::null(),
            SecurityImpersonation,
            TokenPrimary,
            &mut primary,
        )
    };
    if ok == 0 {
        return Err(last_error("DuplicateTokenEx"));
    }
    // SAFETY: DuplicateTokenEx succeeded: `primary` is a new handle we alone own.
    unsafe { owned(primary) }.ok_or_else(|| "DuplicateTokenEx returned no token".to_owned())
}

/// The environment `user` gets at logon (their profile paths, USERNAME, ...), not the
/// service's.
fn user_environment(user: &OwnedHandle) -> Result<Environment, String> {
    let mut block: *mut std::ffi::c_void = std::ptr::null_mut();
    // SAFETY: `block` is a live out-pointer; `user` is an open token with TOKEN_QUERY and
    // TOKEN_DUPLICATE; bInherit = FALSE (not the service's own variables).
    if unsafe { CreateEnvironmentBlock(&mut block, user.as_raw_handle(), 0) } == 0 {
        return Err(last_error("CreateEnvironmentBlock"));
    }
    if block.is_null() {
        return Err("CreateEnvironmentBlock returned no block".into());
    }
    let units = block.cast::<u16>();
    let mut entries = Vec::new();
    let mut at = 0usize;
    // A block is NUL-terminated strings ended by an empty one; bounded in case it is not.
    while at < MAX_BLOCK {
        let mut end = at;
        // SAFETY: `units` points to a block of NUL-terminated strings ended by an empty
        // one (CreateEnvironmentBlock's contract); reading stops at that terminator.
        while end < MAX_BLOCK && unsafe { *units.add(end) } != 0 {
            end += 1;
        }
        if end == at {
            break;
        }
        // SAFETY: [at, end) was just read element by element above.
        entries.push(unsafe { std::slice::from_raw_parts(units.add(at), end - at) }.to_vec());
        at = end + 1;
    }
    // SAFETY: `block` came from CreateEnvironmentBlock and is destroyed once, after its
    // entries were copied.
    unsafe { DestroyEnvironmentBlock(block) };
    Ok(Environment { entries })
}

/// The longest environment block read (in UTF-16 units): far beyond any real one.
const MAX_BLOCK: usize = 1 << 20;

/// An environment as `NAME=value` UTF-16 strings.
#[derive(Debug)]
struct Environment {
    entries: Vec<Vec<u16>>,
}

impl Environment {
    /// The name of an entry, upper-cased (Windows' variable names ignore case). A leading
    /// `=` belongs to the name (`=C:=C:\...`).
    fn key(entry: &[u16]) -> Vec<u16> {
        let end = entry
            .iter()
            .skip(1)
            .position(|&u| u == u16::from(b'='))
            .map_or(entry.len(), |i| i + 1);
        entry[..end]
            .iter()
            .map(|&u| match u8::try_from(u) {
                Ok(b) => u16::from(b.to_ascii_uppercase()),
                Err(_) => u,
            })
            .collect()
    }

    /// Set `name` to `value`, replacing any entry of that name.
    fn set(&mut self, name: &str, value: &str) {
        let key: Vec<u16> = name.to_ascii_uppercase().encode_utf16().collect();
        self.entries.retain(|e| Self::key(e) != key);
        self.entries
            .push(format!("{name}={value}").encode_utf16().collect());
    }

    /// The block CreateProcess takes: sorted by name without regard to case, as Windows
    /// requires, each string NUL-terminated, then one more NUL.
    fn block(&self) -> Vec<u16> {
        let mut entries: Vec<&Vec<u16>> = self.entries.iter().collect();
        entries.sort_by_cached_key(|e| Self::key(e));
        let mut block = Vec::new();
        for e in entries {
            block.extend_from_slice(e);
            block.push(0);
        }
        block.push(0);
        block
    }
}

/// `overlay.log` opened for appending, inheritable so the helper can write to it;
/// `None` (the helper's output is lost) if it cannot be opened.
fn open_log(path: &Path) -> Option<OwnedHandle> {
    if std::fs::metadata(path).is_ok_and(|m| m.len() > LOG_LIMIT) {
        let _ = std::fs::rename(path, path.with_extension("log.1"));
    }
    let file = match std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "the overlay's output is lost");
            return None;
        }
    };
    let handle = OwnedHandle::from(file);
    // SAFETY: `handle` is an open file handle we own; this only sets its inherit flag. Only
    // the helper inherits it: the process is created with a list of exactly this handle.
    let ok = unsafe {
        SetHandleInformation(
            handle.as_raw_handle(),
            HANDLE_FLAG_INHERIT,
            HANDLE_FLAG_INHERIT,
        )
    };
    if ok == 0 {
        tracing::warn!(error = %last_error("SetHandleInformation"), "the overlay's output is lost");
        return None;
    }
    Some(handle)
}

/// The command line Windows programs (and Rust's `std::env::args`) split back into
/// `program` and `args`: the program quoted as a path, each argument quoted when needed.
fn command_line(program: &Path, args: &[String]) -> Vec<u16> {
    let mut line: Vec<u16> = Vec::new();
    line.push(u16::from(b'"'));
    line.extend(program.as_os_str().encode_wide());
    line.push(u16::from(b'"'));
    for arg in args {
        line.push(u16::from(b' '));
        line.extend(quote(arg).encode_utf16());
    }
    line.push(0);
    line
}

/// One argument, quoted by the MSVC C runtime's rules: inside quotes, backslashes are
/// literal except before a quote, where they are doubled and the quote escaped.
fn quote(arg: &str) -> String {
    if !arg.is_empty() && !arg.contains([' ', '\t', '\n', '\u{b}', '"']) {
        return arg.to_owned();
    }
    let mut out = String::from('"');
    let mut backslashes = 0;
    for c in arg.chars() {
        match c {
            '\\' => backslashes += 1,
            '"' => {
                out.extend(std::iter::repeat_n('\\', backslashes * 2 + 1));
                out.push('"');
                backslashes = 0;
            }
            _ => {
                out.extend(std::iter::repeat_n('\\', backslashes));
                out.push(c);
                backslashes = 0;
            }
        }
    }
    out.extend(std::iter::repeat_n('\\', backslashes * 2));
    out.push('"');
    out
}

/// A PROC_THREAD_ATTRIBUTE_LIST naming the one handle the child may inherit.
struct HandleList {
    /// The opaque list; `usize`s for its alignment.
    buffer: Vec<usize>,
    /// The handle value the list points to (it must outlive CreateProcess).
    handle: Box<HANDLE>,
}

impl HandleList {
    fn new(handle: HANDLE) -> Result<HandleList, String> {
        let mut size = 0usize;
        // SAFETY: a null list with a size pointer is the documented way to ask for the
        // size needed; it "fails" with ERROR_INSUFFICIENT_BUFFER.
        unsafe { InitializeProcThreadAttributeList(std::ptr::null_mut(), 1, 0, &mut size) };
        if size == 0 {
            return Err(last_error("InitializeProcThreadAttributeList"));
        }
        let mut list = HandleList {
            buffer: vec![0usize; size.div_ceil(size_of::<usize>())],
            handle: Box::new(handle),
        };
        // SAFETY: the buffer holds at least `size` bytes, suitably aligned.
        if unsafe { InitializeProcThreadAttributeList(list.raw(), 1, 0, &mut size) } == 0 {
            // Nothing to delete: initialisation failed. Forget the buffer's list.
            list.buffer.clear();
            return Err(last_error("InitializeProcThreadAttributeList"));
        }
        // SAFETY: the list was initialised for one attribute; the value is a pointer to
        // one HANDLE in a Box that lives as long as the list.
        let ok = unsafe {
            UpdateProcThreadAttribute(
                list.raw(),
                0,
                PROC_THREAD_ATTRIBUTE_HANDLE_LIST as usize,
                (&raw const *list.handle).cast(),
                size_of::<HANDLE>(),
                std::ptr::null_mut(),
                std::ptr::null(),
            )
        };
        if ok == 0 {
            return Err(last_error("UpdateProcThreadAttribute"));
        }
        Ok(list)
    }

    fn raw(&mut self) -> LPPROC_THREAD_ATTRIBUTE_LIST {
        self.buffer.as_mut_ptr().cast()
    }
}

impl Drop for HandleList {
    fn drop(&mut self) {
        if !self.buffer.is_empty() {
            // SAFETY: the buffer holds a list initialised by InitializeProcThreadAttributeList
            // (an empty buffer marks a failed initialisation), deleted once here.
            unsafe { DeleteProcThreadAttributeList(self.raw()) };
        }
    }
}

/// Create the helper process as `user` on the interactive desktop of their session.
fn create_process(
    user: &OwnedHandle,
    program: &Path,
    args: &[String],
    environment: &[u16],
    log: Option<&OwnedHandle>,
) -> Result<WtsHelper, String> {
    let application = wide(program);
    let mut line = command_line(program, args);
    // The interactive window station and desktop of the token's session: without it the
    // process gets an invisible one.
    let mut desktop = wide(OsStr::new("winsta0\\default"));
    let mut info = STARTUPINFOEXW {
        StartupInfo: STARTUPINFOW {
            cb: size_of::<STARTUPINFOW>() as u32,
            lpDesktop: desktop.as_mut_ptr(),
            ..Default::default()
        },
        lpAttributeList: std::ptr::null_mut(),
    };
    // A console program (venued.exe is one) would otherwise get a console window.
    let mut flags = CREATE_UNICODE_ENVIRONMENT | CREATE_NO_WINDOW;
    let mut handles = None;
    // Without the list the helper still starts, its output lost.
    let log = log.and_then(|log| match HandleList::new(log.as_raw_handle()) {
        Ok(list) => Some((log, list)),
        Err(e) => {
            tracing::warn!(error = %e, "the overlay's output is lost");
            None
        }
    });
    if let Some((log, mut list)) = log {
        info.StartupInfo.cb = size_of::<STARTUPINFOEXW>() as u32;
        info.StartupInfo.dwFlags = STARTF_USESTDHANDLES;
        info.StartupInfo.hStdOutput = log.as_raw_handle();
        info.StartupInfo.hStdError = log.as_raw_handle();
        info.lpAttributeList = list.raw();
        flags |= EXTENDED_STARTUPINFO_PRESENT;
        handles = Some(list);
    }
    let mut process = PROCESS_INFORMATION {
        hProcess: std::ptr::null_mut(),
        hThread: std::ptr::null_mut(),
        dwProcessId: 0,
        dwThreadId: 0,
    };
    // SAFETY: every pointer is to a live, NUL-terminated local (`application`, `line`,
    // which Windows may modify in place, `desktop`) or to the environment block built by
    // `Environment::block` (UTF-16, as CREATE_UNICODE_ENVIRONMENT says); `info` is a
    // STARTUPINFOEXW whose attribute list (when set) lives in `handles` until after the
    // call; handles are inherited only when that list restricts them to the log file.
    let ok = unsafe {
        CreateProcessAsUserW(
            user.as_raw_handle(),
            application.as_ptr(),
            line.as_mut_ptr(),
            std::ptr::null(),
            std::ptr::null(),
            i32::from(handles.is_some()),
            flags,
            environment.as_ptr().cast(),
            std::ptr::null(),
            &info.StartupInfo,
            &mut process,
        )
    };
    // Read before anything else can change the thread's last error.
    let failed = (ok == 0).then(|| last_error("CreateProcessAsUserW"));
    drop(handles);
    if let Some(e) = failed {
        return Err(e);
    }
    // SAFETY: CreateProcessAsUserW succeeded: both handles are new and ours alone.
    let (process_handle, thread) = unsafe { (owned(process.hProcess), owned(process.hThread)) };
    // The thread handle is not needed: closed now (by the drop).
    drop(thread);
    let process_handle = process_handle.ok_or("CreateProcessAsUserW returned no process")?;
    tracing::info!(
        pid = process.dwProcessId,
        "overlay helper started in the console session"
    );
    Ok(WtsHelper {
        process: process_handle,
    })
}

/// A helper process in the user's session; its handle is closed when this is dropped
/// (which does not end the process: see [`Helper::stop`]).
#[derive(Debug)]
struct WtsHelper {
    process: OwnedHandle,
}

impl Helper for WtsHelper {
    fn exited(&mut self) -> bool {
        // SAFETY: `process` is an open process handle (SYNCHRONIZE access: we created it);
        // a zero timeout only polls.
        let state = unsafe { WaitForSingleObject(self.process.as_raw_handle(), 0) };
        // Signalled (exited) or a failed wait: either way nothing to keep waiting for.
        state != WAIT_TIMEOUT
    }

    fn stop(&mut self) {
        if self.exited() {
            return;
        }
        // SAFETY: `process` is an open process handle with PROCESS_TERMINATE (we created
        // it); terminating an already exiting process is harmless.
        unsafe { TerminateProcess(self.process.as_raw_handle(), 1) };
        // Termination is asynchronous; a short wait lets the next helper start alone.
        // SAFETY: as in `exited`, with a bounded timeout.
        unsafe { WaitForSingleObject(self.process.as_raw_handle(), 1_000) };
    }
}
