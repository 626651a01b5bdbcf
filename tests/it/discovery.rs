//! Finding the controller by mDNS: a real `venued serve` advertises `_venued._tcp.local.`,
//! a real `venued agent enroll --code ...` without `--controller` finds it and enrolls, a
//! second box and a malformed advertisement on the same LAN are not taken, and the
//! advertisement goes away when the controller stops.
//!
//! Multicast needs an interface that carries it, and tests must not touch the host's own
//! network. So each test builds a LAN of its own: two network namespaces (the box and the
//! PC) joined by a veth pair, the box at 10.77.0.1, the PC at 10.77.0.2. The controller and
//! the agent run in them through `ip netns exec`; the test's own mDNS responders and
//! browsers run on threads moved into them with setns(2). Creating namespaces needs root:
//! without it the test prints SKIPPED and passes, except under CI, where it fails.

use crate::mqtt::MqttDaemon;
use crate::mqtt_clients::ci;
use crate::support::*;
use mdns_sd::{ServiceDaemon, ServiceEvent, ServiceInfo, TxtProperty};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use venued::discovery::SERVICE_TYPE;

const BOX_IP: &str = "10.77.0.1";
const PC_IP: &str = "10.77.0.2";
/// Where the second box and the malformed advertisement say they are; nothing listens.
const RIVAL_IP: &str = "10.77.0.3";

/// `ip ARGS`, its stderr as the error.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("ip {}: {}", args.join(" "), stderr(&out).trim()))
    }
}

/// Two network namespaces joined by a veth pair, deleted on drop (also when the test
/// fails halfway).
struct Lan {
    box_ns: String,
    pc_ns: String,
}

impl Lan {
    /// None (with a notice) when namespaces cannot be made here, outside CI.
    fn create() -> Option<Self> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let id = format!(
            "venued-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let box_ns = format!("{id}-box");
        if let Err(e) = ip(&["netns", "add", &box_ns]) {
            assert!(!ci(), "cannot create a network namespace under CI: {e}");
            eprintln!("SKIPPED: cannot create a network namespace ({e}); these tests need root");
            return None;
        }
        let lan = Self {
            box_ns,
            pc_ns: format!("{id}-pc"),
        };
        let (b, p) = (lan.box_ns.as_str(), lan.pc_ns.as_str());
        let steps: &[&[&str]] = &[
            &["netns", "add", p],
            &["-n", b, "link", "set", "lo", "up"],
            &["-n", p, "link", "set", "lo", "up"],
            &[
                "-n", b, "link", "add", "lan0", "type", "veth", "peer", "name", "lan0", "netns", p,
            ],
            &[
                "-n",
                b,
                "addr",
                "add",
                &format!("{BOX_IP}/24"),
                "dev",
                "lan0",
            ],
            &[
                "-n",
                b,
                "addr",
                "add",
                &format!("{RIVAL_IP}/24"),
                "dev",
                "lan0",
            ],
            &[
                "-n",
                p,
                "addr",
                "add",
                &format!("{PC_IP}/24"),
                "dev",
                "lan0",
            ],
            &["-n", b, "link", "set", "lan0", "up", "multicast", "on"],
            &["-n", p, "link", "set", "lan0", "up", "multicast", "on"],
        ];
        for step in steps {
            ip(step).unwrap();
        }
        Some(lan)
    }

    /// A command run inside namespace `ns`.
    fn exec(ns: &str, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns, program]);
        cmd
    }

    /// Run `f` on a thread inside namespace `ns`. Threads it starts (mdns-sd's daemon)
    /// stay in that namespace.
    fn within<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
        let handle = std::fs::File::open(format!("/run/netns/{ns}")).unwrap();
        std::thread::spawn(move || {
            use std::os::fd::AsRawFd;
            // SAFETY: setns(2) on a namespace file we hold open; it moves only this
            // thread, which does nothing else.
            let rc = unsafe { libc::setns(handle.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .unwrap()
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        // Deleting a namespace also deletes its end of the veth pair, and so the pair.
        for ns in [&self.pc_ns, &self.box_ns] {
            if let Err(e) = ip(&["netns", "del", ns]) {
                eprintln!("cleanup: {e}");
            }
        }
    }
}

/// An mdns-sd daemon of the test's own, stopped on drop.
struct Mdns(ServiceDaemon);

impl Mdns {
    fn new_in(ns: &str) -> Self {
        Self(Lan::within(ns, || ServiceDaemon::new().unwrap()))
    }
}

impl Drop for Mdns {
    fn drop(&mut self) {
        if let Ok(done) = self.0.shutdown() {
            let _ = done.recv_timeout(Duration::from_secs(2));
        }
    }
}

/// `venued serve` in the box namespace, HTTPS and MQTTS on the LAN address.
struct Controller {
    child: Child,
    data: PathBuf,
    log: PathBuf,
}

impl Controller {
    fn start(lan: &Lan, dir: &Path) -> Self {
        let config = dir.join("venued.toml");
        std::fs::write(
            &config,
            format!(
                "[http]\nlisten = []\n\
                 [tls]\nhttps-listen = [\"{BOX_IP}:8443\"]\n\
                 [mqtt]\nlisten = []\ntls-listen = [\"{BOX_IP}:8883\"]\n\
                 [mdns]\nenabled = true\n"
            ),
        )
        .unwrap();
        let (data, log) = (dir.join("data"), dir.join("serve.log"));
        let mut cmd = Lan::exec(&lan.box_ns, BIN);
        cmd.arg("--config")
            .arg(&config)
            .arg("serve")
            .env("VENUED_DATA_DIR", &data)
            .env("VENUED_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        // Overrides from the environment would win over the file.
        for var in [
            "VENUED_CONFIG",
            "VENUED_HTTP_LISTEN",
            "VENUED_HTTPS_LISTEN",
            "VENUED_MQTT_LISTEN",
            "VENUED_MQTTS_LISTEN",
        ] {
            cmd.env_remove(var);
        }
        // `ip netns exec` execs the program, so this child is venued itself.
        let c = Self {
            child: cmd.spawn().unwrap(),
            data,
            log,
        };
        c.wait_log("mdns: advertising");
        c
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_log(&self, what: &str) {
        wait_log(&self.log, what);
    }

    /// A venued admin command through the control socket (a file: any namespace reaches
    /// it).
    fn cli(&self, args: &[&str]) -> Value {
        let out = venued(&self.data, args);
        assert!(out.status.success(), "venued {args:?}: {}", stderr(&out));
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    }

    /// SIGTERM, as systemd stops it.
    fn terminate(&mut self) -> ExitStatus {
        // SAFETY: kill(2) on our own child's pid; it has not been reaped yet.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        self.child.wait().unwrap()
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[allow(clippy::disallowed_methods)]
fn wait_log(log: &Path, what: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains(what) {
            return text;
        }
        assert!(Instant::now() < deadline, "no {what:?} in the log:\n{text}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `venued agent enroll` in the PC namespace, without --controller.
fn enroll(lan: &Lan, code: &str, dir: &Path, timeout: &str) -> (Output, Duration) {
    let started = Instant::now();
    let out = Lan::exec(&lan.pc_ns, BIN)
        .args([
            "agent",
            "enroll",
            "--code",
            code,
            "--discover-timeout",
            timeout,
        ])
        .arg("--dir")
        .arg(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (out, started.elapsed())
}

/// An advertisement of the test's own, as another box on the LAN would send it.
fn advertise(mdns: &Mdns, name: &str, txt: Vec<TxtProperty>) {
    let info = ServiceInfo::new(
        SERVICE_TYPE,
        name,
        &format!("{name}.local."),
        RIVAL_IP,
        8443,
        txt,
    )
    .unwrap();
    mdns.0.register(info).unwrap();
}

#[test]
fn an_agent_finds_its_controller_by_mdns_and_enrolls() {
    let Some(lan) = Lan::create() else { return };
    let dir = tempfile::tempdir().unwrap();

    // Nothing advertised yet: a clear error after the timeout, and a way out.
    let (out, took) = enroll(
        &lan,
        "K7QFM-2XDRA-3F9A-1C44-B07E-55D2",
        &dir.path().join("none"),
        "1s",
    );
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(err.contains("looking for the controller"), "{err}");
    assert!(err.contains("no venued controller answered"), "{err}");
    assert!(err.contains("within 1s"), "{err}");
    assert!(err.contains("--controller https://"), "{err}");
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(10),
        "{took:?}"
    );

    let mut controller = Controller::start(&lan, dir.path());
    controller.cli(&["station", "add", "pc-01", "--name", "PC 01", "--kind", "pc"]);
    let issued = controller.cli(&["station", "enroll", "pc-01", "--json"]);
    let code = issued["code"].as_str().unwrap().to_owned();
    let ca_prefix: String = code[11..].replace('-', "");
    assert_eq!(ca_prefix.len(), 16);

    // A second box whose CA differs from ours in the last digit only, and an
    // advertisement with our CA but a TXT record of garbage, both pointing where nothing
    // listens: if either were chosen, enrollment would fail.
    let rivals = Mdns::new_in(&lan.box_ns);
    let last = if ca_prefix.ends_with('0') { "1" } else { "0" };
    let other_ca = format!("{}{last}", &ca_prefix[..15]);
    advertise(
        &rivals,
        "rival-box",
        vec![
            TxtProperty::from(("v", "1")),
            TxtProperty::from(("https", "8443")),
            TxtProperty::from(("mqtts", "8883")),
            TxtProperty::from(("ca", other_ca.as_str())),
        ],
    );
    advertise(
        &rivals,
        "junk-box",
        vec![
            TxtProperty::from(("v", "1")),
            TxtProperty::from(("https", &b"\xff\xfe84\x0043"[..])),
            TxtProperty::from(("ca", ca_prefix.as_str())),
        ],
    );

    // A code from a box that is not on this LAN: nothing matches, the error lists all
    // three advertisements, the malformed one is reported as ignored, and no connection
    // is attempted.
    let foreign = format!("{}-0000-0000-0000-0000", &code[..11]);
    let (out, _) = enroll(&lan, &foreign, &dir.path().join("foreign"), "3s");
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(
            "ignoring \"junk-box\": malformed TXT record: the value of \"https\" is not text"
        ),
        "{err}"
    );
    assert!(
        err.contains("no venued controller on this network issued this code"),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "\"rival-box\" at {RIVAL_IP}:8443: another box (its CA starts {other_ca}"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(":8443: another box (its CA starts {ca_prefix}")),
        "{err}"
    );
    assert!(err.contains(&format!("at {BOX_IP}:8443")), "{err}");
    assert!(err.contains("--controller https://"), "{err}");
    assert!(!err.contains("TLS"), "{err}");
    assert!(!dir.path().join("foreign").exists());

    // The real code: found by its CA, enrolled, and the box's LAN address stored.
    let agent_dir = dir.path().join("agent");
    let (out, took) = enroll(&lan, &code, &agent_dir, "5s");
    let (err, stdout) = (stderr(&out), stdout(&out));
    assert!(out.status.success(), "{err}\n{}", controller.log_text());
    assert!(stdout.contains("enrolled as agent:pc-01"), "{stdout}");
    let found = err
        .lines()
        .find(|l| l.starts_with("found controller "))
        .unwrap_or_else(|| panic!("no `found controller` line: {err}"));
    assert!(found.ends_with(&format!(" at {BOX_IP}:8443")), "{err}");
    assert!(!err.contains(RIVAL_IP), "{err}");
    // It returns as soon as the box answers, not after the whole timeout.
    assert!(took < Duration::from_secs(5), "{took:?}");
    let creds: Value =
        serde_json::from_slice(&std::fs::read(agent_dir.join("agent.json")).unwrap()).unwrap();
    assert_eq!(creds["controller_host"], BOX_IP);
    assert_eq!(creds["mqtt_tls_ports"], serde_json::json!([8883]));
    assert_eq!(
        std::fs::read(agent_dir.join("ca.pem")).unwrap(),
        std::fs::read(controller.data.join("tls/ca.pem")).unwrap()
    );

    // A PC browsing sees the box, and sees it leave when venued stops cleanly.
    let watcher = Mdns::new_in(&lan.pc_ns);
    let events = watcher.0.browse(SERVICE_TYPE).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let ours = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match events.recv_timeout(left) {
            Ok(ServiceEvent::ServiceResolved(r))
                if r.get_property_val_str("ca") == Some(ca_prefix.as_str())
                    && r.get_property_val_str("https") == Some("8443") =>
            {
                assert_eq!(r.get_property_val_str("v"), Some("1"));
                assert_eq!(r.get_property_val_str("mqtts"), Some("8883"));
                let addrs: Vec<String> = r
                    .get_addresses_v4()
                    .iter()
                    .map(ToString::to_string)
                    .collect();
                assert_eq!(addrs, [BOX_IP]);
                break r.fullname.clone();
            }
            Ok(_) => {}
            Err(e) => panic!("the controller's advertisement never resolved: {e}"),
        }
    };
    let status = controller.terminate();
    assert!(status.success(), "{status:?}: {}", controller.log_text());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match events.recv_timeout(left) {
            Ok(ServiceEvent::ServiceRemoved(_, name)) if name == ours => break,
            Ok(_) => {}
            Err(e) => panic!("no goodbye for {ours} after the controller stopped: {e}"),
        }
    }
    let log = controller.log_text();
    assert!(log.contains("mdns: advertisement withdrawn"), "{log}");
    assert!(log.contains("venued stopped cleanly"), "{log}");
}

/// The default HTTPS listener is loopback-only, and `[mdns] enabled = false` turns it off:
/// nothing is advertised and the log says why. Loopback only, no namespace needed.
#[test]
fn mdns_stays_off_on_loopback_and_when_disabled() {
    let dir = tempfile::tempdir().unwrap();
    let https = free_port();
    let d = MqttDaemon::start_with(
        dir.path(),
        &[("VENUED_HTTPS_LISTEN", &format!("127.0.0.1:{https}"))],
    );
    let log = wait_log(&d.log, "mdns off");
    assert!(
        log.contains(&format!(
            "mdns off: HTTPS listens only on loopback (127.0.0.1:{https}), which PCs cannot reach"
        )),
        "{log}"
    );
    assert!(!log.contains("mdns: advertising"), "{log}");
    drop(d);

    let dir = tempfile::tempdir().unwrap();
    let d = MqttDaemon::start_config(dir.path(), "[mdns]\nenabled = false\n");
    let log = wait_log(&d.log, "mdns off");
    assert!(log.contains("mdns off (mdns.enabled = false)"), "{log}");
}
