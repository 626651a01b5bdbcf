//! The helper's window on Windows: the lock page over the whole primary screen, or the
//! countdown in its top right corner.
//!
//! One borderless popup window, always on top and kept out of the taskbar and Alt+Tab
//! (a tool window). While locked it covers the screen, takes the foreground and a
//! low-level keyboard hook swallows the shortcuts that would leave it (the Windows keys,
//! Alt+Tab, Alt+Esc, Ctrl+Esc, Alt+F4). During a session it is a small panel that never
//! takes the focus and lets clicks through, so a game keeps both; it is put back on top
//! every second, so a full-screen game does not cover it for longer than that.
//!
//! The frame is drawn by `render` into memory; here it is only handed to GDI as a 32-bit
//! DIB on `WM_PAINT`. The window procedure gets no context from Windows, so what it needs
//! (the frame, the keys typed) lives in a thread-local: the window belongs to the thread
//! that created it, and only that thread's message loop calls the procedure.

use super::adapter::NO_CONSOLE_SESSION;
use super::last_error;
use super::launcher::FOLLOW_CONSOLE_ENV;
use crate::agent::overlay::helper::{Display, Key};
use crate::agent::overlay::render::Canvas;
use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use windows_sys::Win32::Foundation::{
    ERROR_CLASS_ALREADY_EXISTS, GetLastError, HWND, LPARAM, LRESULT, RECT, WAIT_FAILED, WPARAM,
};
use windows_sys::Win32::Graphics::Gdi::{
    BI_RGB, BITMAPINFO, BITMAPINFOHEADER, BeginPaint, DIB_RGB_COLORS, EndPaint, HDC,
    InvalidateRect, PAINTSTRUCT, SRCCOPY, StretchDIBits, UpdateWindow, ValidateRect,
};
use windows_sys::Win32::System::LibraryLoader::GetModuleHandleW;
use windows_sys::Win32::System::RemoteDesktop::{
    ProcessIdToSessionId, WTSGetActiveConsoleSessionId,
};
use windows_sys::Win32::System::SystemInformation::GetTickCount;
use windows_sys::Win32::System::Threading::{
    AttachThreadInput, GetCurrentProcessId, GetCurrentThreadId,
};
use windows_sys::Win32::UI::HiDpi::{
    DPI_AWARENESS_CONTEXT_PER_MONITOR_AWARE_V2, SetProcessDpiAwarenessContext,
};
use windows_sys::Win32::UI::Input::KeyboardAndMouse::{
    GetAsyncKeyState, GetLastInputInfo, LASTINPUTINFO, SetFocus, VK_CONTROL, VK_ESCAPE, VK_F4,
    VK_LWIN, VK_RWIN, VK_TAB,
};
use windows_sys::Win32::UI::WindowsAndMessaging::{
    BringWindowToTop, CallNextHookEx, CreateWindowExW, DefWindowProcW, DestroyWindow,
    DispatchMessageW, GWL_EXSTYLE, GetClientRect, GetForegroundWindow, GetMessageW,
    GetSystemMetrics, GetWindowThreadProcessId, HC_ACTION, HWND_TOPMOST, IDC_ARROW,
    KBDLLHOOKSTRUCT, LLKHF_ALTDOWN, LWA_ALPHA, LoadCursorW, MSG, MsgWaitForMultipleObjects,
    PM_NOREMOVE, PM_REMOVE, PeekMessageW, PostMessageW, PostThreadMessageW, QS_ALLINPUT,
    RegisterClassExW, SM_CXSCREEN, SM_CYSCREEN, SWP_FRAMECHANGED, SWP_NOACTIVATE, SWP_NOMOVE,
    SWP_NOSIZE, SWP_SHOWWINDOW, SetForegroundWindow, SetLayeredWindowAttributes,
    SetProcessDPIAware, SetWindowLongPtrW, SetWindowPos, SetWindowsHookExW, TranslateMessage,
    UnhookWindowsHookEx, WH_KEYBOARD_LL, WM_APP, WM_CHAR, WM_CLOSE, WM_ERASEBKGND, WM_PAINT,
    WM_QUIT, WNDCLASSEXW, WS_EX_LAYERED, WS_EX_NOACTIVATE, WS_EX_TOOLWINDOW, WS_EX_TOPMOST,
    WS_EX_TRANSPARENT, WS_POPUP,
};
use windows_sys::core::{PCWSTR, w};

const CLASS: PCWSTR = w!("venued-overlay");
/// The countdown's distance from the screen's top and right edges, as on X11.
const MARGIN: i32 = 16;
/// How often the window is put back on top (and, locked, back in the foreground).
const REASSERT_EVERY: Duration = Duration::from_secs(1);
/// Posted by the keyboard hook to the lock page: take the foreground back.
const WM_TAKE_FOREGROUND: u32 = WM_APP + 1;
/// Posted to the hook's thread: remove the hook and end.
const WM_STOP_HOOK: u32 = WM_APP + 2;

/// What the window procedure shares with [`Win32`], on the window's thread.
#[derive(Default)]
struct WindowState {
    /// The frame on screen, repainted from here on `WM_PAINT`.
    canvas: Option<Canvas>,
    /// Keys typed since the last `wait_input`.
    keys: Vec<Key>,
}

thread_local! {
    static WINDOW: RefCell<WindowState> = RefCell::new(WindowState::default());
}

/// `f` on the window state; `None` if it is in use further up this thread's stack (a
/// message sent to the window from inside another handler), which never panics.
fn with_state<R>(f: impl FnOnce(&mut WindowState) -> R) -> Option<R> {
    WINDOW
        .try_with(|cell| cell.try_borrow_mut().ok().map(|mut s| f(&mut s)))
        .ok()
        .flatten()
}

/// The lock page's window while the keyboard hook guards it (0: none). The hook
/// procedure runs on the hook's own thread and gets no context, hence a global.
static KIOSK: AtomicUsize = AtomicUsize::new(0);

pub struct Win32 {
    hwnd: HWND,
    /// Locked (true) or countdown (false); `None` until the first frame.
    kiosk: Option<bool>,
    /// Where the window is: (x, y, width, height).
    geometry: (i32, i32, i32, i32),
    /// The low-level keyboard hook, installed while locked.
    hook: Option<Hook>,
    /// This process's session when it must leave once another session has the console.
    follow_session: Option<u32>,
    reasserted: Instant,
}

impl Win32 {
    /// Create the (hidden) window on this session's interactive desktop.
    pub fn open() -> Result<Win32, String> {
        dpi_aware();
        // SAFETY: null asks for this executable's module handle; nothing to release.
        let instance = unsafe { GetModuleHandleW(std::ptr::null()) };
        if instance.is_null() {
            return Err(last_error("GetModuleHandleW"));
        }
        // SAFETY: a system cursor (null instance, predefined id): shared, never destroyed.
        let cursor = unsafe { LoadCursorW(std::ptr::null_mut(), IDC_ARROW) };
        let class = WNDCLASSEXW {
            cbSize: size_of::<WNDCLASSEXW>() as u32,
            lpfnWndProc: Some(window_proc),
            hInstance: instance,
            hCursor: cursor,
            lpszClassName: CLASS,
            ..Default::default()
        };
        // SAFETY: `class` is fully initialised; its strings are static.
        if unsafe { RegisterClassExW(&class) } == 0 {
            // SAFETY: GetLastError only reads the thread's last-error value.
            let code = unsafe { GetLastError() };
            if code != ERROR_CLASS_ALREADY_EXISTS {
                return Err(super::with_code("RegisterClassExW", code));
            }
        }
        // SAFETY: the class was registered above with this instance; static strings; no
        // parent, menu or creation data. Created hidden, 1x1, until the first frame.
        let hwnd = unsafe {
            CreateWindowExW(
                WS_EX_TOPMOST | WS_EX_TOOLWINDOW,
                CLASS,
                w!("venued"),
                WS_POPUP,
                0,
                0,
                1,
                1,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                instance,
                std::ptr::null(),
            )
        };
        if hwnd.is_null() {
            return Err(last_error("CreateWindowExW"));
        }
        Ok(Win32 {
            hwnd,
            kiosk: None,
            geometry: (0, 0, 0, 0),
            hook: None,
            follow_session: follow_session(),
            reasserted: Instant::now(),
        })
    }

    /// Switch between the lock page (focusable, hook on) and the countdown (no focus,
    /// clicks go through, hook off).
    fn set_mode(&mut self, kiosk: bool) -> Result<(), String> {
        let mut style = WS_EX_TOPMOST | WS_EX_TOOLWINDOW;
        if !kiosk {
            // TRANSPARENT lets clicks through only on a LAYERED window; NOACTIVATE keeps
            // the game in the foreground when the panel appears or is clicked.
            style |= WS_EX_NOACTIVATE | WS_EX_TRANSPARENT | WS_EX_LAYERED;
        }
        // SAFETY: our window; GWL_EXSTYLE takes the extended style bits.
        let previous = unsafe { SetWindowLongPtrW(self.hwnd, GWL_EXSTYLE, style as isize) };
        if previous == 0 {
            // The previous style always had WS_EX_TOPMOST: 0 is a failure.
            return Err(last_error("SetWindowLongPtrW"));
        }
        if !kiosk {
            // SAFETY: our window, now layered: fully opaque (a layered window without
            // attributes is never shown).
            if unsafe { SetLayeredWindowAttributes(self.hwnd, 0, 255, LWA_ALPHA) } == 0 {
                return Err(last_error("SetLayeredWindowAttributes"));
            }
        }
        if kiosk {
            KIOSK.store(self.hwnd as usize, Ordering::Relaxed);
        } else {
            KIOSK.store(0, Ordering::Relaxed);
            self.hook = None;
        }
        self.kiosk = Some(kiosk);
        Ok(())
    }

    /// Where the window goes for `canvas`.
    fn placement(&self, canvas: &Canvas, kiosk: bool) -> (i32, i32, i32, i32) {
        let (sw, sh) = screen();
        if kiosk {
            (0, 0, sw, sh)
        } else {
            let (w, h) = (
                i32::try_from(canvas.width).unwrap_or(sw),
                i32::try_from(canvas.height).unwrap_or(sh),
            );
            (sw - w - MARGIN, MARGIN, w, h)
        }
    }

    /// Put the window where it belongs and on top of every other topmost window.
    fn place(&mut self, geometry: (i32, i32, i32, i32), extra: u32) -> Result<(), String> {
        let mut flags = SWP_SHOWWINDOW | extra;
        if self.kiosk != Some(true) {
            flags |= SWP_NOACTIVATE;
        }
        let (x, y, w, h) = geometry;
        // SAFETY: our window; HWND_TOPMOST is a documented pseudo-handle for the z-order.
        if unsafe { SetWindowPos(self.hwnd, HWND_TOPMOST, x, y, w, h, flags) } == 0 {
            return Err(last_error("SetWindowPos"));
        }
        self.geometry = geometry;
        Ok(())
    }

    /// Every second: back on top (a game may have raised itself), the lock page back in
    /// the foreground and over the whole screen (the resolution may have changed).
    fn reassert(&mut self) -> Result<(), String> {
        self.reasserted = Instant::now();
        match self.kiosk {
            None => Ok(()),
            Some(true) => {
                let (sw, sh) = screen();
                if self.geometry != (0, 0, sw, sh) {
                    self.place((0, 0, sw, sh), 0)?;
                    // SAFETY: our window; null = all of it; no erase (the DIB covers it).
                    unsafe { InvalidateRect(self.hwnd, std::ptr::null(), 0) };
                } else {
                    let flags = SWP_NOMOVE | SWP_NOSIZE | SWP_NOACTIVATE;
                    // SAFETY: as in `place`; only the z-order changes.
                    unsafe { SetWindowPos(self.hwnd, HWND_TOPMOST, 0, 0, 0, 0, flags) };
                }
                take_foreground(self.hwnd);
                Ok(())
            }
            Some(false) => {
                let flags = SWP_NOMOVE | SWP_NOSIZE | SWP_NOACTIVATE;
                // SAFETY: as in `place`; only the z-order changes.
                unsafe { SetWindowPos(self.hwnd, HWND_TOPMOST, 0, 0, 0, 0, flags) };
                Ok(())
            }
        }
    }

    /// For a helper started by the service: whether another session now has the console
    /// (fast user switching), where the agent should start a new helper.
    fn left_console(&self) -> Option<(u32, u32)> {
        let mine = self.follow_session?;
        // SAFETY: no arguments; returns a session id or 0xFFFFFFFF.
        let console = unsafe { WTSGetActiveConsoleSessionId() };
        // During the switch no session has it: wait for the one that will.
        (console != NO_CONSOLE_SESSION && console != mine).then_some((mine, console))
    }
}

impl Display for Win32 {
    fn size(&self) -> (u32, u32) {
        let (w, h) = screen();
        (w.max(1) as u32, h.max(1) as u32)
    }

    fn present(&mut self, canvas: Canvas, kiosk: bool) -> Result<(), String> {
        let placement = self.placement(&canvas, kiosk);
        // Kept for WM_PAINT: moved, not copied (a full-screen frame is 8 MB at 1080p).
        with_state(|s| s.canvas = Some(canvas));
        let mut extra = 0;
        if self.kiosk != Some(kiosk) {
            self.set_mode(kiosk)?;
            // The extended style changed: make Windows take it into account.
            extra = SWP_FRAMECHANGED;
        }
        self.place(placement, extra)?;
        // SAFETY: our window; null = all of it; no erase (the DIB covers it). UpdateWindow
        // paints it now, through our window procedure.
        unsafe {
            InvalidateRect(self.hwnd, std::ptr::null(), 0);
            UpdateWindow(self.hwnd);
        }
        if kiosk {
            if self.hook.is_none() {
                // Without the hook the page still covers the screen; retried at the next
                // frame (typing on the page makes one).
                self.hook = Hook::install()
                    .inspect_err(|e| tracing::warn!(error = %e, "no keyboard hook"))
                    .ok();
            }
            take_foreground(self.hwnd);
        }
        Ok(())
    }

    fn wait_input(&mut self, timeout: Duration) -> Result<Vec<Key>, String> {
        let ms = u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX - 1);
        // SAFETY: no handles to wait on (count 0, null array): only this thread's queue.
        let woke = unsafe { MsgWaitForMultipleObjects(0, std::ptr::null(), 0, ms, QS_ALLINPUT) };
        if woke == WAIT_FAILED {
            return Err(last_error("MsgWaitForMultipleObjects"));
        }
        let mut msg = MSG::default();
        // SAFETY: `msg` is a live MSG; null window = every window of this thread and its
        // thread messages. Each message is translated (WM_KEYDOWN -> WM_CHAR) and sent to
        // our window procedure.
        while unsafe { PeekMessageW(&mut msg, std::ptr::null_mut(), 0, 0, PM_REMOVE) } != 0 {
            if msg.message == WM_QUIT {
                return Err("the overlay window was told to quit".into());
            }
            // SAFETY: `msg` was just filled by PeekMessageW.
            unsafe {
                TranslateMessage(&msg);
                DispatchMessageW(&msg);
            }
        }
        if self.reasserted.elapsed() >= REASSERT_EVERY {
            self.reassert()?;
            if let Some((mine, console)) = self.left_console() {
                return Err(format!(
                    "session {mine} left the console (session {console} has it now): the \
                     agent starts a helper there"
                ));
            }
        }
        Ok(with_state(|s| std::mem::take(&mut s.keys)).unwrap_or_default())
    }

    fn idle_ms(&mut self) -> Option<u64> {
        let mut info = LASTINPUTINFO {
            cbSize: size_of::<LASTINPUTINFO>() as u32,
            dwTime: 0,
        };
        // SAFETY: `info` is a live LASTINPUTINFO with its size set. This is the input of
        // this session, which is the customer's: the helper runs in it.
        if unsafe { GetLastInputInfo(&mut info) } == 0 {
            return None;
        }
        // SAFETY: no arguments. Both are milliseconds since boot on the same 32-bit clock,
        // so the wrapping difference is right across its 49.7-day wrap.
        let now = unsafe { GetTickCount() };
        Some(u64::from(now.wrapping_sub(info.dwTime)))
    }
}

impl Drop for Win32 {
    fn drop(&mut self) {
        KIOSK.store(0, Ordering::Relaxed);
        self.hook = None;
        // SAFETY: our window, destroyed once (the handle is not used after).
        unsafe { DestroyWindow(self.hwnd) };
    }
}

/// The primary screen's size in pixels.
fn screen() -> (i32, i32) {
    // SAFETY: metric ids only.
    unsafe { (GetSystemMetrics(SM_CXSCREEN), GetSystemMetrics(SM_CYSCREEN)) }
}

/// Real pixels: without DPI awareness Windows reports a scaled-down screen and stretches
/// the frame (blurred text, a lock page that misses the edges of a 150 % display).
fn dpi_aware() {
    // SAFETY: a documented pseudo-handle value; fails harmlessly if already set.
    if unsafe { SetProcessDpiAwarenessContext(DPI_AWARENESS_CONTEXT_PER_MONITOR_AWARE_V2) } == 0 {
        // SAFETY: no arguments; the older, system-wide form.
        unsafe { SetProcessDPIAware() };
    }
}

/// This process's session, when the launcher asked us to follow the console.
fn follow_session() -> Option<u32> {
    if std::env::var_os(FOLLOW_CONSOLE_ENV).is_none_or(|v| v != "1") {
        return None;
    }
    let mut session = 0u32;
    // SAFETY: our own process id; `session` is a live out-pointer.
    let ok = unsafe { ProcessIdToSessionId(GetCurrentProcessId(), &mut session) };
    (ok != 0).then_some(session)
}

/// Make the lock page the foreground window, so what the customer types reaches it.
///
/// Windows gives the foreground only to the process the user last used; a helper that
/// appears over a game is not it. Attaching to the foreground thread's input for a moment
/// lifts that restriction (the usual way kiosk shells do it); clicking the page works too.
fn take_foreground(hwnd: HWND) {
    // SAFETY: no arguments; may be null during a switch.
    let current = unsafe { GetForegroundWindow() };
    if current == hwnd {
        return;
    }
    // SAFETY: our window.
    if unsafe { SetForegroundWindow(hwnd) } != 0 {
        return;
    }
    // SAFETY: `current` is a window handle or null (then 0 is returned); no process id.
    let theirs = unsafe { GetWindowThreadProcessId(current, std::ptr::null_mut()) };
    // SAFETY: no arguments.
    let ours = unsafe { GetCurrentThreadId() };
    if theirs == 0 || theirs == ours {
        return;
    }
    // SAFETY: two live thread ids; the attachment is undone below.
    if unsafe { AttachThreadInput(ours, theirs, 1) } == 0 {
        return;
    }
    // SAFETY: our window; then the attachment made above is undone.
    unsafe {
        BringWindowToTop(hwnd);
        SetForegroundWindow(hwnd);
        SetFocus(hwnd);
        AttachThreadInput(ours, theirs, 0);
    }
}

/// The window procedure of our one window (Windows calls it on the window's thread).
extern "system" fn window_proc(hwnd: HWND, msg: u32, wparam: WPARAM, lparam: LPARAM) -> LRESULT {
    match msg {
        WM_PAINT => {
            paint(hwnd);
            0
        }
        // The frame covers the whole window: erasing first would only flicker.
        WM_ERASEBKGND => 1,
        WM_CHAR => {
            if let Some(key) = key(wparam) {
                with_state(|s| s.keys.push(key));
            }
            0
        }
        // Alt+F4 (should the hook miss it) or a task manager's "close": the lock page stays.
        WM_CLOSE => 0,
        WM_TAKE_FOREGROUND => {
            take_foreground(hwnd);
            0
        }
        // SAFETY: the arguments Windows passed us, handed on unchanged.
        _ => unsafe { DefWindowProcW(hwnd, msg, wparam, lparam) },
    }
}

/// A typed character (`WM_CHAR`, UTF-16) as a key of the lock page.
fn key(code: WPARAM) -> Option<Key> {
    Some(match u32::try_from(code).ok()? {
        0x0d => Key::Enter,
        0x09 => Key::Tab,
        0x08 => Key::Backspace,
        0x1b => Key::Escape,
        c => {
            let c = char::from_u32(c)?;
            if !c.is_ascii_alphanumeric() {
                return None;
            }
            Key::Char(c)
        }
    })
}

fn paint(hwnd: HWND) {
    let mut ps = PAINTSTRUCT::default();
    // SAFETY: our window, inside its WM_PAINT; `ps` is a live PAINTSTRUCT.
    let hdc = unsafe { BeginPaint(hwnd, &mut ps) };
    if hdc.is_null() {
        // SAFETY: our window; marks it painted so WM_PAINT does not repeat forever.
        unsafe { ValidateRect(hwnd, std::ptr::null()) };
        return;
    }
    let mut client = RECT::default();
    // SAFETY: our window; `client` is a live RECT.
    unsafe { GetClientRect(hwnd, &mut client) };
    with_state(|s| {
        if let Some(canvas) = &s.canvas {
            draw(
                hdc,
                canvas,
                client.right - client.left,
                client.bottom - client.top,
            );
        }
    });
    // SAFETY: ends the paint begun above, with the same PAINTSTRUCT.
    unsafe { EndPaint(hwnd, &ps) };
}

/// Copy `canvas` onto the window, stretched to `width` × `height` (the same size but
/// for the moment between a resolution change and the next frame).
fn draw(hdc: HDC, canvas: &Canvas, width: i32, height: i32) {
    let (Ok(w), Ok(h)) = (i32::try_from(canvas.width), i32::try_from(canvas.height)) else {
        return;
    };
    if w == 0 || h == 0 || canvas.pixels.len() != canvas.width as usize * canvas.height as usize {
        return;
    }
    let info = BITMAPINFO {
        bmiHeader: BITMAPINFOHEADER {
            biSize: size_of::<BITMAPINFOHEADER>() as u32,
            biWidth: w,
            // Negative: top-down rows, the canvas's order.
            biHeight: -h,
            biPlanes: 1,
            biBitCount: 32,
            biCompression: BI_RGB,
            ..Default::default()
        },
        ..Default::default()
    };
    // SAFETY: `hdc` is the paint DC; `info` describes a w × h top-down 32-bit DIB and
    // `canvas.pixels` holds exactly w × h pixels of 4 bytes (checked above) in the
    // B, G, R, unused byte order such a DIB has.
    unsafe {
        StretchDIBits(
            hdc,
            0,
            0,
            width,
            height,
            0,
            0,
            w,
            h,
            canvas.pixels.as_ptr().cast(),
            &info,
            DIB_RGB_COLORS,
            SRCCOPY,
        )
    };
}

/// The low-level keyboard hook, on a thread of its own.
///
/// Windows calls a low-level hook through its thread's message loop and drops it if a
/// call takes too long; the helper's own thread spends time rendering frames, so the
/// hook gets a thread that does nothing but wait for messages.
struct Hook {
    thread: u32,
    join: Option<std::thread::JoinHandle<()>>,
}

impl Hook {
    fn install() -> Result<Hook, String> {
        let (report, installed) = mpsc::channel();
        let join = std::thread::Builder::new()
            .name("keyboard-hook".into())
            .spawn(move || hook_thread(&report))
            .map_err(|e| format!("cannot start the keyboard hook's thread: {e}"))?;
        match installed.recv() {
            Ok(Ok(thread)) => Ok(Hook {
                thread,
                join: Some(join),
            }),
            Ok(Err(e)) => {
                let _ = join.join();
                Err(e)
            }
            Err(_) => {
                let _ = join.join();
                Err("the keyboard hook's thread ended".into())
            }
        }
    }
}

impl Drop for Hook {
    fn drop(&mut self) {
        // SAFETY: a thread id and a message without pointers; the thread's queue exists
        // (it was created before the id was reported).
        let posted = unsafe { PostThreadMessageW(self.thread, WM_STOP_HOOK, 0, 0) } != 0;
        // If the message could not be posted, leave the thread rather than wait forever.
        if posted && let Some(join) = self.join.take() {
            let _ = join.join();
        }
    }
}

fn hook_thread(report: &mpsc::Sender<Result<u32, String>>) {
    let mut msg = MSG::default();
    // Creates this thread's message queue, so the stop message cannot be posted too early.
    // SAFETY: `msg` is a live MSG; PM_NOREMOVE only looks.
    unsafe { PeekMessageW(&mut msg, std::ptr::null_mut(), 0, 0, PM_NOREMOVE) };
    // SAFETY: null asks for this executable's module handle, where `keyboard_hook` is.
    let module = unsafe { GetModuleHandleW(std::ptr::null()) };
    // SAFETY: `keyboard_hook` is a hook procedure valid for the life of the process;
    // thread id 0 (every thread of the desktop) is what WH_KEYBOARD_LL requires.
    let hook = unsafe { SetWindowsHookExW(WH_KEYBOARD_LL, Some(keyboard_hook), module, 0) };
    if hook.is_null() {
        let _ = report.send(Err(last_error("SetWindowsHookExW")));
        return;
    }
    // SAFETY: no arguments.
    let _ = report.send(Ok(unsafe { GetCurrentThreadId() }));
    loop {
        // SAFETY: `msg` is a live MSG; null window: this thread's messages. The hook is
        // called from inside this wait.
        let got = unsafe { GetMessageW(&mut msg, std::ptr::null_mut(), 0, 0) };
        if got <= 0 || msg.message == WM_STOP_HOOK {
            break;
        }
    }
    // SAFETY: the hook installed above, removed once.
    unsafe { UnhookWindowsHookEx(hook) };
}

/// Swallows, while the lock page is up, the shortcuts that would leave it, and every key
/// while another window has the foreground (sending the page a request to take it back).
///
/// Ctrl+Alt+Del and Win+L are handled by Windows' logon process below any hook and
/// cannot be blocked; they lead to Windows' own secure screens, not past the lock page.
extern "system" fn keyboard_hook(code: i32, wparam: WPARAM, lparam: LPARAM) -> LRESULT {
    let kiosk = KIOSK.load(Ordering::Relaxed);
    if code == HC_ACTION as i32 && kiosk != 0 {
        // SAFETY: for HC_ACTION, a WH_KEYBOARD_LL hook's lparam points to the event's
        // KBDLLHOOKSTRUCT, valid for the duration of this call; only read.
        let event = unsafe { &*(lparam as *const KBDLLHOOKSTRUCT) };
        if leaves_the_page(event) {
            return 1;
        }
        // SAFETY: no arguments.
        let foreground = unsafe { GetForegroundWindow() } as usize;
        if foreground != kiosk {
            // SAFETY: posting a pointer-free message; a stale window handle only fails.
            unsafe { PostMessageW(kiosk as HWND, WM_TAKE_FOREGROUND, 0, 0) };
            return 1;
        }
    }
    // SAFETY: the event handed on unchanged (the hook handle argument is ignored).
    unsafe { CallNextHookEx(std::ptr::null_mut(), code, wparam, lparam) }
}

/// Whether a key event belongs to a shortcut that switches away from the lock page.
fn leaves_the_page(event: &KBDLLHOOKSTRUCT) -> bool {
    let Ok(vk) = u16::try_from(event.vkCode) else {
        return false;
    };
    let alt = event.flags & LLKHF_ALTDOWN != 0;
    // SAFETY: a virtual-key code only. High bit set = Ctrl is down.
    let ctrl = unsafe { GetAsyncKeyState(i32::from(VK_CONTROL)) } < 0;
    match vk {
        // The Start menu and every Win+ shortcut (Win+D, Win+Tab, Win+R, ...).
        VK_LWIN | VK_RWIN => true,
        VK_TAB => alt,
        // Alt+Esc; Ctrl+Esc (Start); Ctrl+Shift+Esc (Task Manager).
        VK_ESCAPE => alt || ctrl,
        VK_F4 => alt,
        _ => false,
    }
}
