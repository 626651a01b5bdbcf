//! The lock screen and the countdown overlay, drawn by the real helper under Xvfb and
//! read back with OCR (tesseract): what a customer at the PC would see.
// Plain test threads: sleeping between screenshots is the point.
#![allow(clippy::disallowed_methods)]

use crate::agent::{Agent, CONFIG, agent_dir};
use crate::mqtt::MqttDaemon;
use crate::mqtt_clients::tool;
use crate::support::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use x11rb::connection::Connection;
use x11rb::protocol::xproto::{ConnectionExt as _, ImageFormat};

const WIDTH: u16 = 1280;
const HEIGHT: u16 = 720;

/// A virtual X server on a display number of its own.
struct Xvfb {
    child: Child,
    display: String,
}

impl Xvfb {
    fn start(bin: &Path) -> Xvfb {
        // A display number no other test or session uses: from our pid, probed.
        let mut n = 100 + std::process::id() % 800;
        while Path::new(&format!("/tmp/.X11-unix/X{n}")).exists()
            || Path::new(&format!("/tmp/.X{n}-lock")).exists()
        {
            n += 1;
        }
        let display = format!(":{n}");
        let child = Command::new(bin)
            .arg(&display)
            .args(["-screen", "0", &format!("{WIDTH}x{HEIGHT}x24")])
            .args(["-nolisten", "tcp", "-br", "-noreset"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let x = Xvfb { child, display };
        let deadline = Instant::now() + Duration::from_secs(10);
        while x11rb::connect(Some(&x.display)).is_err() {
            assert!(Instant::now() < deadline, "Xvfb did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        x
    }

    /// The whole screen as a PNG file at `path`; also, when `panel`, the countdown's
    /// corner alone at `<path>.panel.png`, which is what OCR reads: on a mostly black
    /// screen tesseract's global threshold lumps the green panel in with its white text.
    fn screenshot(&self, path: &Path, panel: bool) -> PathBuf {
        let (conn, screen) = x11rb::connect(Some(&self.display)).unwrap();
        let root = conn.setup().roots[screen].root;
        let image = conn
            .get_image(ImageFormat::Z_PIXMAP, root, 0, 0, WIDTH, HEIGHT, !0)
            .unwrap()
            .reply()
            .unwrap();
        // Depth 24 at 32 bits per pixel, little-endian: B, G, R, pad.
        let rgb: Vec<u8> = image
            .data
            .chunks(4)
            .flat_map(|p| [p[2], p[1], p[0]])
            .collect();
        write_png(path, u32::from(WIDTH), u32::from(HEIGHT), &rgb);
        if !panel {
            return path.to_path_buf();
        }
        // The panel: 460 px wide, 16 px from the top right corner (render.rs, x11.rs).
        let (x0, w, h) = (usize::from(WIDTH) - 16 - 460, 460, 170);
        let crop: Vec<u8> = (16..16 + h)
            .flat_map(|y| {
                let start = (y * usize::from(WIDTH) + x0) * 3;
                rgb[start..start + w * 3].to_vec()
            })
            .collect();
        let out = path.with_extension("panel.png");
        write_png(&out, w as u32, h as u32, &crop);
        out
    }
}

impl Drop for Xvfb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_png(path: &Path, width: u32, height: u32, rgb: &[u8]) {
    let file = std::fs::File::create(path).unwrap();
    let mut png = png::Encoder::new(std::io::BufWriter::new(file), width, height);
    png.set_color(png::ColorType::Rgb);
    png.set_depth(png::BitDepth::Eight);
    png.write_header().unwrap().write_image_data(rgb).unwrap();
}

/// What tesseract reads on an image.
fn ocr(tesseract: &Path, image: &Path) -> String {
    let out = Command::new(tesseract)
        .arg(image)
        .arg("stdout")
        .args(["--psm", "11"])
        .stderr(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tesseract failed on {}",
        image.display()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The first `m:ss` countdown in `text`, in seconds.
fn countdown(text: &str) -> Option<u32> {
    text.split_whitespace().find_map(|w| {
        let (m, s) = w.split_once(':')?;
        let s = s.trim_end_matches(|c: char| !c.is_ascii_digit());
        (s.len() == 2).then_some(())?;
        Some(m.parse::<u32>().ok()? * 60 + s.parse::<u32>().ok()?)
    })
}

/// Where the screenshots are kept: target/artefacts/overlay (CI keeps target/).
fn artefacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/artefacts/overlay");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Poll `check` on OCR of fresh screenshots until it holds (the helper draws within a
/// frame, but OCR of a half-drawn first frame must not fail the test).
fn until_seen(
    x: &Xvfb,
    tesseract: &Path,
    path: &Path,
    panel: bool,
    check: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let read = x.screenshot(path, panel);
        let text = ocr(tesseract, &read);
        if check(&text) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "OCR of {} never matched; last read:\n{text}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The helper process the agent started (a child of `agent`).
fn helper_pid(agent: u32) -> Option<u32> {
    let children = std::fs::read_to_string(format!("/proc/{agent}/task/{agent}/children")).ok()?;
    children.split_whitespace().next()?.parse().ok()
}

#[test]
fn the_lock_screen_and_the_countdown_read_back_with_ocr() {
    let (Some(xvfb), Some(tesseract), Some(xdotool)) = (
        tool(PathBuf::from("/usr/bin/Xvfb"), "Xvfb"),
        tool(PathBuf::from("/usr/bin/tesseract"), "tesseract"),
        tool(PathBuf::from("/usr/bin/xdotool"), "xdotool"),
    ) else {
        return;
    };
    let x = Xvfb::start(&xvfb);
    let dir = tempfile::tempdir().unwrap();
    let d = MqttDaemon::start_config(dir.path(), CONFIG);
    let v = d.cli(&[
        "station", "add", "pc-07", "--name", "Arena 7", "--kind", "pc", "--json",
    ]);
    let (user, pass) = (
        v["agent"]["username"].as_str().unwrap().to_owned(),
        v["agent"]["password"].as_str().unwrap().to_owned(),
    );
    let adir = dir.path().join("agent");
    agent_dir(&d, &adir, &user, &pass);
    // agent_dir writes pc-01's files; this test's station is pc-07.
    let creds = std::fs::read_to_string(adir.join("agent.json")).unwrap();
    std::fs::write(adir.join("agent.json"), creds.replace("pc-01", "pc-07")).unwrap();

    let mut cmd = Command::new(BIN);
    cmd.env("DISPLAY", &x.display)
        .args(["agent", "run", "--adapter", "log", "--overlay", "--dir"])
        .arg(&adir);
    let agent = Agent::spawn(cmd);
    let shots = artefacts();

    // Locked: the kiosk page names the station and says it is free.
    let lock_png = shots.join("lock.png");
    let text = until_seen(&x, &tesseract, &lock_png, false, |t| {
        t.contains("Arena 7") && t.contains("free")
    });
    assert!(text.contains("Member number"), "{text}");

    // A member types a login: it reaches the controller over the request topic and its
    // answer (no member accounts yet) comes back onto the lock page.
    let typed = Command::new(&xdotool)
        .env("DISPLAY", &x.display)
        .args(["type", "--delay", "30", "1042"])
        .status()
        .unwrap();
    assert!(typed.success());
    for keys in [
        &["key", "Tab"][..],
        &["type", "--delay", "30", "7788"],
        &["key", "Return"],
    ] {
        let ok = Command::new(&xdotool)
            .env("DISPLAY", &x.display)
            .args(keys)
            .status()
            .unwrap();
        assert!(ok.success());
    }
    let answer_png = shots.join("lock-login-answer.png");
    let text = until_seen(&x, &tesseract, &answer_png, false, |t| {
        t.contains("not available")
    });
    assert!(!text.contains("7788"), "the PIN must never show:\n{text}");

    // A session: the countdown in the corner, counting down.
    d.cli(&["session", "start", "pc-07", "30m"]);
    agent.expect("unlock", Duration::from_secs(5));
    let first_png = shots.join("countdown-1.png");
    let first = until_seen(&x, &tesseract, &first_png, true, |t| {
        t.contains("Arena 7") && countdown(t).is_some()
    });
    std::thread::sleep(Duration::from_secs(2));
    let second_png = shots.join("countdown-2.png");
    let second = until_seen(&x, &tesseract, &second_png, true, |t| {
        countdown(t).is_some()
    });
    let (a, b) = (countdown(&first).unwrap(), countdown(&second).unwrap());
    eprintln!("countdown read: {a} s, then {b} s two seconds later");
    assert!(
        a > 28 * 60 && a <= 30 * 60,
        "first countdown {a} s:\n{first}"
    );
    assert!(b < a && a - b <= 5, "countdown went {a} -> {b}");

    // Memory of the two processes, for the log only: budgets are measured on release
    // builds (docs/benchmarks.md), not asserted on this debug build.
    let pid = agent.child.id();
    let helper = helper_pid(pid);
    eprintln!(
        "RSS: agent {:?} KiB, overlay helper {:?} KiB",
        rss_kib(pid),
        helper.and_then(rss_kib)
    );

    // The helper reports who sits there and how idle they are; the agent keeps it in
    // its status (and in the retained MQTT status).
    let out = Command::new(BIN)
        .args(["agent", "status", "--json", "--dir"])
        .arg(&adir)
        .output()
        .unwrap();
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["overlay"], true, "{status}");
    assert!(status["idle_s"].as_u64().is_some(), "{status}");

    // Back to the lock page when the session stops.
    d.cli(&["session", "stop", "pc-07"]);
    agent.expect("lock", Duration::from_secs(5));
    until_seen(&x, &tesseract, &shots.join("lock-after.png"), false, |t| {
        t.contains("free")
    });
}
