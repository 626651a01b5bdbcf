//! Software rendering of a [`Screen`] into a pixel buffer.
//!
//! The helper draws every frame itself, in memory, and hands the finished pixels to the
//! platform (X11 `PutImage`, Win32 `SetDIBitsToDevice`): one renderer for both, tested
//! without a display. Text is rasterised with fontdue from a TrueType font already on the
//! PC (DejaVu on Linux, Segoe UI or Arial on Windows); we ship no font.

use super::screen::{Role, Screen};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Pixels, row-major, 4 bytes each in the order B, G, R, unused: the layout both X11
/// (depth 24, 32 bits per pixel, LSB first) and a 32-bit Windows DIB take as they are,
/// so a frame goes to the screen without a converted copy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Canvas {
    pub width: u32,
    pub height: u32,
    pub pixels: Vec<[u8; 4]>,
}

/// 0x00RRGGBB as a pixel.
const fn px(rgb: u32) -> [u8; 4] {
    [rgb as u8, (rgb >> 8) as u8, (rgb >> 16) as u8, 0]
}

impl Canvas {
    pub fn new(width: u32, height: u32, rgb: u32) -> Self {
        Self {
            width,
            height,
            pixels: vec![px(rgb); width as usize * height as usize],
        }
    }

    /// The pixels as the bytes the screen takes.
    pub fn bytes(&self) -> &[u8] {
        self.pixels.as_flattened()
    }

    /// Pixel `i` as 0x00RRGGBB.
    pub fn rgb(&self, i: usize) -> u32 {
        let [b, g, r, _] = self.pixels[i];
        u32::from_be_bytes([0, r, g, b])
    }

    pub fn fill(&mut self, x: i32, y: i32, w: u32, h: u32, rgb: u32) {
        let (x0, y0) = (x.max(0) as u32, y.max(0) as u32);
        let x1 = (x + w as i32).clamp(0, self.width as i32) as u32;
        let y1 = (y + h as i32).clamp(0, self.height as i32) as u32;
        for row in y0..y1 {
            let start = (row * self.width) as usize;
            self.pixels[start + x0 as usize..start + x1 as usize].fill(px(rgb));
        }
    }

    /// Mix `rgb` into one pixel with coverage `alpha` (0–255).
    fn blend(&mut self, x: i32, y: i32, rgb: u32, alpha: u8) {
        if x < 0 || y < 0 || x >= self.width as i32 || y >= self.height as i32 || alpha == 0 {
            return;
        }
        let i = (y as u32 * self.width + x as u32) as usize;
        let (a, fore) = (u16::from(alpha), px(rgb));
        let back = &mut self.pixels[i];
        for c in 0..3 {
            let mixed = (u16::from(fore[c]) * a + u16::from(back[c]) * (255 - a)) / 255;
            back[c] = mixed as u8;
        }
    }
}

/// A TrueType font with a cache of the glyphs drawn so far.
pub struct Font {
    font: fontdue::Font,
    glyphs: HashMap<(char, u32), (fontdue::Metrics, Vec<u8>)>,
    pub path: PathBuf,
}

/// Where common desktops keep a sans-serif font, best first.
fn font_candidates() -> Vec<PathBuf> {
    let mut out = Vec::new();
    if cfg!(windows) {
        let fonts = std::env::var_os("WINDIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(r"C:\Windows"))
            .join("Fonts");
        for f in ["segoeuib.ttf", "segoeui.ttf", "arialbd.ttf", "arial.ttf"] {
            out.push(fonts.join(f));
        }
    } else {
        for f in [
            "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",
            "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
            "/usr/share/fonts/TTF/DejaVuSans-Bold.ttf",
            "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans-Bold.ttf",
            "/usr/share/fonts/truetype/liberation/LiberationSans-Bold.ttf",
            "/usr/share/fonts/truetype/noto/NotoSans-Bold.ttf",
        ] {
            out.push(PathBuf::from(f));
        }
    }
    out
}

impl Font {
    /// `path`, or the first font of [`font_candidates`] that exists.
    pub fn load(path: Option<&Path>) -> Result<Font, String> {
        let candidates = match path {
            Some(p) => vec![p.to_path_buf()],
            None => font_candidates(),
        };
        for p in &candidates {
            let Ok(bytes) = std::fs::read(p) else {
                continue;
            };
            let font = fontdue::Font::from_bytes(bytes, fontdue::FontSettings::default())
                .map_err(|e| format!("{}: not a usable font: {e}", p.display()))?;
            return Ok(Font {
                font,
                glyphs: HashMap::new(),
                path: p.clone(),
            });
        }
        Err(format!(
            "no font found (tried {}); install fonts-dejavu-core or pass --font",
            candidates
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }

    fn glyph(&mut self, c: char, px: u32) -> &(fontdue::Metrics, Vec<u8>) {
        let font = &self.font;
        self.glyphs
            .entry((c, px))
            .or_insert_with(|| font.rasterize(c, px as f32))
    }

    /// The width of `text` at `px` pixels.
    pub fn width(&mut self, text: &str, px: u32) -> u32 {
        text.chars()
            .map(|c| self.glyph(c, px).0.advance_width)
            .sum::<f32>()
            .ceil() as u32
    }

    /// Draw `text` with its baseline at `y`, starting at `x`.
    pub fn draw(&mut self, canvas: &mut Canvas, text: &str, px: u32, x: i32, y: i32, rgb: u32) {
        let mut pen = x as f32;
        for c in text.chars() {
            let (m, bitmap) = self.glyph(c, px).clone();
            let left = pen.round() as i32 + m.xmin;
            let top = y - m.height as i32 - m.ymin;
            for row in 0..m.height {
                for col in 0..m.width {
                    let alpha = bitmap[row * m.width + col];
                    canvas.blend(left + col as i32, top + row as i32, rgb, alpha);
                }
            }
            pen += m.advance_width;
        }
    }

    /// The largest size up to `px` at which `text` fits in `max_width`.
    fn fit(&mut self, text: &str, px: u32, max_width: u32) -> u32 {
        let mut size = px;
        while size > 8 && self.width(text, size) > max_width {
            size = size * 9 / 10;
        }
        size
    }
}

/// What the member is typing on the lock page.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Entry {
    pub member: String,
    pub pin: String,
    /// Typing the PIN (else the member number).
    pub on_pin: bool,
    /// The answer to the last login, shown under the fields (ok, text).
    pub note: Option<(bool, String)>,
}

const WHITE: u32 = 0x00ff_ffff;
const DIM: u32 = 0x00b8_c0cc;
const YELLOW: u32 = 0x00ff_d84a;
const FIELD: u32 = 0x0024_3048;
const FIELD_ACTIVE: u32 = 0x0034_4870;

/// The size of the countdown window for a screen (the lock page takes the whole screen).
pub fn countdown_size(screen: &Screen) -> (u32, u32) {
    let extra = screen
        .lines()
        .iter()
        .filter(|(role, _)| *role == Role::Message)
        .count() as u32;
    (460, 170 + 40 * extra)
}

/// Draw `screen` (as it is now) on a canvas of `width` × `height`.
pub fn render(
    screen: &Screen,
    entry: &Entry,
    font: Option<&mut Font>,
    width: u32,
    height: u32,
) -> Canvas {
    let mut canvas = Canvas::new(width, height, screen.band().rgb());
    let Some(font) = font else {
        // No font: the colour alone still locks or shows the band.
        return canvas;
    };
    if screen.is_kiosk() {
        lock_page(screen, entry, font, &mut canvas);
    } else {
        countdown(screen, font, &mut canvas);
    }
    canvas
}

fn centred(font: &mut Font, c: &mut Canvas, text: &str, px: u32, y: u32, rgb: u32) {
    let px = font.fit(text, px, c.width * 9 / 10);
    let w = font.width(text, px);
    font.draw(
        c,
        text,
        px,
        (c.width.saturating_sub(w) / 2) as i32,
        y as i32,
        rgb,
    );
}

fn lock_page(screen: &Screen, entry: &Entry, font: &mut Font, c: &mut Canvas) {
    let h = c.height;
    let mut y = h * 22 / 100;
    for (role, text) in screen.lines() {
        match role {
            Role::Title => centred(font, c, &text, h / 7, y, WHITE),
            Role::Headline => {
                y = h * 34 / 100;
                centred(font, c, &text, h / 22, y, DIM);
            }
            _ => {
                y = h * 84 / 100;
                centred(font, c, &text, h / 24, y, YELLOW);
            }
        }
    }
    // The member login: two fields and a hint.
    let px = (h / 26).max(12);
    let field_w = c.width.min(px * 24);
    let left = (c.width.saturating_sub(field_w) / 2) as i32;
    let pin_mask = "\u{2022}".repeat(entry.pin.chars().count());
    for (i, (label, value, active)) in [
        ("Member number", entry.member.as_str(), !entry.on_pin),
        ("PIN", pin_mask.as_str(), entry.on_pin),
    ]
    .into_iter()
    .enumerate()
    {
        let top = (h * 46 / 100 + i as u32 * px * 3) as i32;
        let back = if active { FIELD_ACTIVE } else { FIELD };
        c.fill(left, top, field_w, px * 2, back);
        font.draw(c, label, px * 2 / 3, left, top - (px / 4) as i32, DIM);
        let cursor = if active { "_" } else { "" };
        font.draw(
            c,
            &format!("{value}{cursor}"),
            px,
            left + px as i32 / 2,
            top + (px * 3 / 2) as i32,
            WHITE,
        );
    }
    let hint_y = h * 46 / 100 + px * 6 + px;
    centred(
        font,
        c,
        "Tab: next field \u{00b7} Enter: log in",
        px * 2 / 3,
        hint_y,
        DIM,
    );
    if let Some((ok, note)) = &entry.note {
        let rgb = if *ok { 0x0080_ff80 } else { 0x00ff_8080 };
        centred(font, c, note, px, hint_y + px * 2, rgb);
    }
}

fn countdown(screen: &Screen, font: &mut Font, c: &mut Canvas) {
    let mut y = 46;
    for (role, text) in screen.lines() {
        let (px, rgb, step) = match role {
            Role::Title => (34, WHITE, 0),
            Role::Countdown => (88, WHITE, 100),
            _ => (24, YELLOW, 40),
        };
        y += step;
        let px = font.fit(&text, px, c.width - 32);
        font.draw(c, &text, px, 16, y, rgb);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::overlay::screen::{Band, LockReason};

    fn font() -> Option<Font> {
        // Hosts without a font still run the colour tests; CI installs DejaVu.
        Font::load(None).ok()
    }

    fn inked(c: &Canvas, back: u32) -> usize {
        (0..c.pixels.len()).filter(|i| c.rgb(*i) != back).count()
    }

    #[test]
    fn the_countdown_takes_its_band_colour_and_draws_text() {
        let s = Screen::Countdown {
            station: "PC 07".into(),
            left_ms: Some(4 * 60_000),
            grace: false,
            message: None,
        };
        let (w, h) = countdown_size(&s);
        let mut f = font();
        let c = render(&s, &Entry::default(), f.as_mut(), w, h);
        assert_eq!(c.rgb(0), Band::Red.rgb());
        if f.is_some() {
            assert!(inked(&c, Band::Red.rgb()) > 500, "no text drawn");
        }
    }

    #[test]
    fn the_lock_page_masks_the_pin() {
        let s = Screen::Locked {
            station: "PC 07".into(),
            why: LockReason::Free,
            message: None,
        };
        let Some(mut f) = font() else { return };
        let typed = Entry {
            member: "1042".into(),
            pin: "12".into(),
            on_pin: true,
            note: None,
        };
        let other_pin = Entry {
            pin: "98".into(),
            ..typed.clone()
        };
        // Two different PINs of one length draw the same pixels: the PIN never shows.
        let a = render(&s, &typed, Some(&mut f), 800, 600);
        let b = render(&s, &other_pin, Some(&mut f), 800, 600);
        assert_eq!(a, b);
        let c = render(&s, &Entry::default(), Some(&mut f), 800, 600);
        assert_ne!(a, c);
    }

    #[test]
    fn text_is_clipped_to_the_canvas() {
        let Some(mut f) = font() else { return };
        let mut c = Canvas::new(10, 10, 0);
        f.draw(&mut c, "WWWWWWWW", 200, -50, 300, WHITE);
        c.fill(-5, -5, 100, 3, WHITE);
        assert_eq!(c.pixels.len(), 100);
    }

    #[test]
    fn a_missing_font_is_a_clear_error() {
        let e = Font::load(Some(Path::new("/nonexistent/font.ttf")))
            .err()
            .unwrap_or_default();
        assert!(e.contains("/nonexistent/font.ttf"), "{e}");
    }
}
