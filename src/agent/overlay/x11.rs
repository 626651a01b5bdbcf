//! The helper's window on X11 (Linux desktops, and Xvfb in the tests).
//!
//! One override-redirect window, so no window manager moves, decorates or hides it: the
//! whole screen with keyboard and pointer grabbed while locked, a small panel in the top
//! right corner during a session. It is raised again on every frame, so a full-screen
//! game does not cover it for more than a second.

use super::helper::{Display, Key};
use super::render::Canvas;
use std::borrow::Cow;
use std::os::fd::AsRawFd;
use std::time::Duration;
use x11rb::connection::Connection;
use x11rb::image::{BitsPerPixel, Image, ImageOrder, ScanlinePad};
use x11rb::protocol::Event;
use x11rb::protocol::screensaver::ConnectionExt as _;
use x11rb::protocol::xproto::{
    ConfigureWindowAux, ConnectionExt as _, CreateGCAux, CreateWindowAux, EventMask, GrabMode,
    StackMode, Window, WindowClass,
};
use x11rb::rust_connection::RustConnection;

pub struct X11 {
    conn: RustConnection,
    root: Window,
    win: Window,
    gc: u32,
    size: (u32, u32),
    depth: u8,
    /// What is on screen, for Expose.
    last: Option<(Canvas, bool)>,
    /// Where the window is now: (x, y, w, h).
    geometry: (i32, i32, u32, u32),
    grabbed: bool,
    /// keysym of each keycode (first column), from `min_keycode`.
    keymap: Vec<u32>,
    min_keycode: u8,
}

fn x(e: impl std::fmt::Display) -> String {
    format!("X11: {e}")
}

impl X11 {
    /// Connect to `$DISPLAY`.
    pub fn open() -> Result<X11, String> {
        let (conn, screen_num) = x11rb::connect(None).map_err(|e| {
            format!(
                "cannot open the X display {:?}: {e}",
                std::env::var("DISPLAY").ok()
            )
        })?;
        let screen = conn.setup().roots[screen_num].clone();
        if screen.root_depth != 24 && screen.root_depth != 32 {
            return Err(format!(
                "X11: a screen depth of {} is not supported (24 or 32)",
                screen.root_depth
            ));
        }
        let win = conn.generate_id().map_err(x)?;
        let size = (
            u32::from(screen.width_in_pixels),
            u32::from(screen.height_in_pixels),
        );
        conn.create_window(
            screen.root_depth,
            win,
            screen.root,
            0,
            0,
            1,
            1,
            0,
            WindowClass::INPUT_OUTPUT,
            0,
            &CreateWindowAux::new()
                .override_redirect(1)
                .background_pixel(0)
                .event_mask(EventMask::EXPOSURE | EventMask::KEY_PRESS),
        )
        .map_err(x)?;
        let gc = conn.generate_id().map_err(x)?;
        conn.create_gc(gc, win, &CreateGCAux::new()).map_err(x)?;
        let setup = conn.setup();
        let (min, max) = (setup.min_keycode, setup.max_keycode);
        let mapping = conn
            .get_keyboard_mapping(min, max - min + 1)
            .map_err(x)?
            .reply()
            .map_err(x)?;
        let per = usize::from(mapping.keysyms_per_keycode.max(1));
        let keymap = mapping.keysyms.chunks(per).map(|c| c[0]).collect();
        Ok(X11 {
            conn,
            root: screen.root,
            win,
            gc,
            size,
            depth: screen.root_depth,
            last: None,
            geometry: (0, 0, 0, 0),
            grabbed: false,
            keymap,
            min_keycode: min,
        })
    }

    fn key(&self, keycode: u8) -> Option<Key> {
        let sym = *self
            .keymap
            .get(usize::from(keycode.checked_sub(self.min_keycode)?))?;
        Some(match sym {
            0x30..=0x39 | 0x61..=0x7a | 0x41..=0x5a => Key::Char(char::from(sym as u8)),
            0xffb0..=0xffb9 => Key::Char(char::from(b'0' + (sym - 0xffb0) as u8)),
            0xff08 => Key::Backspace,
            0xff09 => Key::Tab,
            0xff0d | 0xff8d => Key::Enter,
            0xff1b => Key::Escape,
            _ => return None,
        })
    }

    fn put(&self, canvas: &Canvas) -> Result<(), String> {
        let image = Image::new(
            canvas.width as u16,
            canvas.height as u16,
            ScanlinePad::Pad32,
            self.depth,
            BitsPerPixel::B32,
            ImageOrder::LsbFirst,
            Cow::Borrowed(canvas.bytes()),
        )
        .map_err(x)?;
        image.put(&self.conn, self.win, self.gc, 0, 0).map_err(x)?;
        Ok(())
    }

    fn grab(&mut self, on: bool) -> Result<(), String> {
        if on == self.grabbed {
            return Ok(());
        }
        if on {
            // Best effort: another client may hold a grab (a screensaver); retried every frame.
            let kb = self
                .conn
                .grab_keyboard(
                    false,
                    self.win,
                    x11rb::CURRENT_TIME,
                    GrabMode::ASYNC,
                    GrabMode::ASYNC,
                )
                .map_err(x)?
                .reply()
                .map_err(x)?;
            let ptr = self
                .conn
                .grab_pointer(
                    false,
                    self.win,
                    EventMask::NO_EVENT,
                    GrabMode::ASYNC,
                    GrabMode::ASYNC,
                    self.win,
                    x11rb::NONE,
                    x11rb::CURRENT_TIME,
                )
                .map_err(x)?
                .reply()
                .map_err(x)?;
            self.grabbed = u8::from(kb.status) == 0 && u8::from(ptr.status) == 0;
        } else {
            self.conn.ungrab_keyboard(x11rb::CURRENT_TIME).map_err(x)?;
            self.conn.ungrab_pointer(x11rb::CURRENT_TIME).map_err(x)?;
            self.grabbed = false;
        }
        Ok(())
    }
}

impl Display for X11 {
    fn size(&self) -> (u32, u32) {
        self.size
    }

    fn present(&mut self, canvas: Canvas, kiosk: bool) -> Result<(), String> {
        let geometry = if kiosk {
            (0, 0, self.size.0, self.size.1)
        } else {
            let margin = 16;
            (
                self.size.0 as i32 - canvas.width as i32 - margin,
                margin,
                canvas.width,
                canvas.height,
            )
        };
        if geometry != self.geometry {
            self.conn
                .configure_window(
                    self.win,
                    &ConfigureWindowAux::new()
                        .x(geometry.0)
                        .y(geometry.1)
                        .width(geometry.2)
                        .height(geometry.3),
                )
                .map_err(x)?;
            self.conn.map_window(self.win).map_err(x)?;
            self.geometry = geometry;
        }
        self.conn
            .configure_window(
                self.win,
                &ConfigureWindowAux::new().stack_mode(StackMode::ABOVE),
            )
            .map_err(x)?;
        self.put(&canvas)?;
        self.conn.flush().map_err(x)?;
        self.grab(kiosk)?;
        // Kept for Expose: moved, not copied (a full-screen frame is 8 MB at 1080p).
        self.last = Some((canvas, kiosk));
        Ok(())
    }

    fn wait_input(&mut self, timeout: Duration) -> Result<Vec<Key>, String> {
        let mut fds = [libc::pollfd {
            fd: self.conn.stream().as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        // SAFETY: `fds` is a valid array of one pollfd for the duration of the call.
        unsafe { libc::poll(fds.as_mut_ptr(), 1, timeout.as_millis() as libc::c_int) };
        let mut keys = Vec::new();
        let mut exposed = false;
        while let Some(event) = self.conn.poll_for_event().map_err(x)? {
            match event {
                Event::KeyPress(k) => keys.extend(self.key(k.detail)),
                Event::Expose(_) => exposed = true,
                _ => {}
            }
        }
        if let Some((canvas, kiosk)) = self.last.take() {
            if exposed {
                self.put(&canvas)?;
            }
            if kiosk && !self.grabbed {
                self.grab(true)?;
            }
            self.last = Some((canvas, kiosk));
        }
        self.conn.flush().map_err(x)?;
        Ok(keys)
    }

    fn idle_ms(&mut self) -> Option<u64> {
        let reply = self
            .conn
            .screensaver_query_info(self.root)
            .ok()?
            .reply()
            .ok()?;
        Some(u64::from(reply.ms_since_user_input))
    }
}
