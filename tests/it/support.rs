//! Shared test helpers: an in-process engine on a manual clock, and the real binary.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use venued::clock::ManualClock;
use venued::domain::timekeeping::TrustSource;
use venued::domain::{Actor, Command as Cmd, SessionId, StationId, StationKind};
use venued::engine::{Engine, EngineConfig, Reply, Request};
use venued::store::{StoreLocation, StoreOptions};

pub const BIN: &str = env!("CARGO_BIN_EXE_venued");

pub fn station(id: &str) -> StationId {
    StationId::parse(id).unwrap()
}

pub fn t0() -> jiff::Timestamp {
    "2026-06-01T18:00:00Z".parse().unwrap()
}

pub fn trusted_clock() -> ManualClock {
    ManualClock::new(t0(), Some(TrustSource::SystemSync))
}

pub fn start_engine(dir: &Path, clock: &ManualClock, config: EngineConfig) -> Engine {
    Engine::start(
        StoreLocation::Dir(dir.to_path_buf()),
        StoreOptions::default(),
        config,
        Arc::new(clock.clone()),
    )
    .unwrap()
}

pub async fn exec(engine: &Engine, cmd: Cmd) -> Result<Reply, venued::engine::EngineError> {
    engine
        .execute(Request::new(cmd, Actor::Local { uid: None }))
        .await
}

pub async fn add_stations(engine: &Engine, ids: &[&str]) {
    for id in ids {
        exec(
            engine,
            Cmd::AddStation {
                id: station(id),
                name: id.to_uppercase(),
                kind: StationKind::Pc,
                zone: None,
            },
        )
        .await
        .unwrap();
    }
}

pub async fn start_session(engine: &Engine, on: &str, secs: i64) -> SessionId {
    let reply = exec(
        engine,
        Cmd::StartSession {
            station: station(on),
            duration: Some(jiff::SignedDuration::from_secs(secs)),
        },
    )
    .await
    .unwrap();
    match &reply.events[0].body.kind {
        venued::domain::EventKind::Session { session, .. } => session.id,
        other => panic!("unexpected event {other:?}"),
    }
}

/// The session-change kinds recorded for one session, in order, from the event log.
pub fn changes(engine: &Engine, id: SessionId) -> Vec<String> {
    engine
        .store()
        .unwrap()
        .events(0, 100_000)
        .unwrap()
        .into_iter()
        .filter_map(|e| match e.body.kind {
            venued::domain::EventKind::Session { change, session } if session.id == id => {
                let v = serde_json::to_value(&change).unwrap();
                Some(v["kind"].as_str().unwrap().to_owned())
            }
            _ => None,
        })
        .collect()
}

/// A `venued serve` child process on a data dir, killed on drop.
pub struct Daemon {
    pub child: Child,
    pub dir: PathBuf,
}

impl Daemon {
    pub fn start(dir: &Path) -> Self {
        Self::start_with_http(dir, "127.0.0.1:0")
    }

    pub fn start_with_http(dir: &Path, listen: &str) -> Self {
        let child = Command::new(BIN)
            .arg("serve")
            .env("VENUED_DATA_DIR", dir)
            .env("VENUED_HTTP_LISTEN", listen)
            .env("VENUED_HTTPS_LISTEN", "127.0.0.1:0")
            .env("VENUED_MQTT_LISTEN", "127.0.0.1:0")
            .env("VENUED_MQTTS_LISTEN", "127.0.0.1:0")
            .env("VENUED_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let daemon = Self {
            child,
            dir: dir.to_path_buf(),
        };
        daemon.wait_ready();
        // The control socket opens before the TCP listeners: wait for a fixed port too.
        if let Ok(addr) = listen.parse::<std::net::SocketAddr>()
            && addr.port() != 0
        {
            daemon.wait_port(addr);
        }
        daemon
    }

    // Polls a socket from test code; a few blocked milliseconds on a test runtime are fine.
    #[allow(clippy::disallowed_methods)]
    fn wait_ready(&self) {
        let socket = self.dir.join("venued.sock");
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("venued did not open its control socket within 20 s");
    }

    #[allow(clippy::disallowed_methods)]
    fn wait_port(&self, addr: std::net::SocketAddr) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(addr).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("venued did not listen on {addr} within 20 s");
    }

    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait; returns the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        // SAFETY: kill(2) on our own child's pid; it has not been reaped yet.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        self.child.wait().unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Run a `venued` admin command against a data dir.
pub fn venued(dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("VENUED_DATA_DIR", dir)
        .env_remove("VENUED_CONFIG")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A free loopback port (the small race with other tests is retried by the caller).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
