//! The agent's side of the overlay: start the helper in the user's session, keep it
//! running, send it screens, take back logins and presence.

use super::ipc::{self, TOKEN_ENV, ToAgent, ToHelper};
use super::screen::Screen;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

/// A running helper process.
pub trait Helper: Send {
    /// Whether it has exited.
    fn exited(&mut self) -> bool;
    /// End it (when its link broke, so a new one can take over).
    fn stop(&mut self);
}

/// Starts the helper where the customer sees it.
pub trait Launcher: Send + 'static {
    /// Start a helper that connects to `addr` and greets with `token`.
    fn launch(&mut self, addr: SocketAddr, token: &str) -> Result<Box<dyn Helper>, String>;
}

/// Runs `<program> <args> --connect <addr>` with the token in its environment: the helper
/// for a desktop the agent itself runs in (Linux/X11, or a test).
pub struct ProcessLauncher {
    pub program: std::path::PathBuf,
    pub args: Vec<String>,
}

impl ProcessLauncher {
    /// This same executable's `venued agent overlay`, with `extra` arguments.
    pub fn this_exe(extra: Vec<String>) -> Result<Self, String> {
        let program =
            std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
        let mut args = vec!["agent".to_owned(), "overlay".to_owned()];
        args.extend(extra);
        Ok(Self { program, args })
    }
}

impl Helper for std::process::Child {
    fn exited(&mut self) -> bool {
        !matches!(self.try_wait(), Ok(None))
    }

    fn stop(&mut self) {
        let _ = self.kill();
        let _ = self.wait();
    }
}

impl Launcher for ProcessLauncher {
    fn launch(&mut self, addr: SocketAddr, token: &str) -> Result<Box<dyn Helper>, String> {
        let child = std::process::Command::new(&self.program)
            .args(&self.args)
            .arg("--connect")
            .arg(addr.to_string())
            .env(TOKEN_ENV, token)
            .stdin(std::process::Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.program.display()))?;
        Ok(Box::new(child))
    }
}

/// The agent's handle on the overlay.
pub struct Overlay {
    screen: watch::Sender<Option<Screen>>,
    results: mpsc::Sender<ToHelper>,
}

impl Overlay {
    /// Start keeping a helper alive; what it sends arrives on the returned receiver.
    pub fn start(launcher: Box<dyn Launcher>) -> (Overlay, mpsc::Receiver<ToAgent>) {
        let (screen, screen_rx) = watch::channel(None);
        let (results, results_rx) = mpsc::channel(8);
        let (from_helper, rx) = mpsc::channel(16);
        tokio::spawn(supervise(launcher, screen_rx, results_rx, from_helper));
        (Overlay { screen, results }, rx)
    }

    /// Show `screen` (as of now).
    pub fn show(&self, screen: Screen) {
        self.screen.send_replace(Some(screen));
    }

    /// Tell the customer how their login went.
    pub fn login_result(&self, ok: bool, text: String) {
        let _ = self.results.try_send(ToHelper::LoginResult { ok, text });
    }
}

const FIRST_BACKOFF: Duration = Duration::from_secs(1);
// Short: when no one is logged on yet (Windows), the lock page must follow a login soon.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long a started helper has to connect and greet.
const GREETING: Duration = Duration::from_secs(15);

async fn supervise(
    mut launcher: Box<dyn Launcher>,
    mut screen: watch::Receiver<Option<Screen>>,
    mut results: mpsc::Receiver<ToHelper>,
    from_helper: mpsc::Sender<ToAgent>,
) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        match serve_one(
            &mut *launcher,
            &mut screen,
            &mut results,
            &from_helper,
            &mut backoff,
        )
        .await
        {
            Ok(()) => return, // the agent is stopping
            Err(e) => tracing::warn!(error = %e, retry_in = ?backoff, "overlay helper"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Start one helper and serve it until its link breaks (`Err`) or the agent stops (`Ok`).
async fn serve_one(
    launcher: &mut dyn Launcher,
    screen: &mut watch::Receiver<Option<Screen>>,
    results: &mut mpsc::Receiver<ToHelper>,
    from_helper: &mpsc::Sender<ToAgent>,
    backoff: &mut Duration,
) -> Result<(), String> {
    let listener = TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))
        .await
        .map_err(|e| format!("cannot listen on loopback: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let token = format!("{:032x}", rand::random::<u128>());
    let mut helper = launcher.launch(addr, &token)?;
    let result = async {
        let stream = tokio::time::timeout(GREETING, greeted(&listener, &token))
            .await
            .map_err(|_| "the helper did not connect in time".to_owned())??;
        drop(listener);
        tracing::info!("overlay helper connected");
        *backoff = FIRST_BACKOFF;
        serve(stream, screen, results, from_helper).await
    }
    .await;
    helper.stop();
    result
}

/// Accept connections until one greets with the token (others are dropped).
async fn greeted(listener: &TcpListener, token: &str) -> Result<TcpStream, String> {
    loop {
        let (stream, peer) = listener.accept().await.map_err(|e| e.to_string())?;
        let mut reader = BufReader::new(stream);
        let mut line = Vec::new();
        let read = tokio::time::timeout(
            Duration::from_secs(5),
            (&mut reader)
                .take(ipc::MAX_LINE as u64)
                .read_until(b'\n', &mut line),
        )
        .await;
        let hello = match read {
            Ok(Ok(_)) if line.last() == Some(&b'\n') => {
                ipc::decode::<ToAgent>(&line[..line.len() - 1])
            }
            _ => Err("no greeting".to_owned()),
        };
        match hello {
            Ok(ToAgent::Hello { token: t }) if t == token => return Ok(reader.into_inner()),
            _ => tracing::warn!(%peer, "overlay connection without the right token refused"),
        }
    }
}

async fn serve(
    stream: TcpStream,
    screen: &mut watch::Receiver<Option<Screen>>,
    results: &mut mpsc::Receiver<ToHelper>,
    from_helper: &mpsc::Sender<ToAgent>,
) -> Result<(), String> {
    let _ = stream.set_nodelay(true);
    let (read, mut write) = stream.into_split();
    // Reads stop at the line limit, so even a misbehaving helper cannot make the agent
    // buffer more than one line's worth.
    let mut lines = BufReader::new(read).take(0);
    let mut line = Vec::new();
    screen.mark_changed();
    loop {
        lines.set_limit((ipc::MAX_LINE + 1).saturating_sub(line.len()) as u64);
        tokio::select! {
            changed = screen.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
                let current = screen.borrow_and_update().clone();
                if let Some(s) = current {
                    write
                        .write_all(&ipc::encode(&ToHelper::Show { screen: s }))
                        .await
                        .map_err(|e| format!("link to the helper broke: {e}"))?;
                }
            }
            result = results.recv() => {
                let Some(msg) = result else { return Ok(()) };
                write
                    .write_all(&ipc::encode(&msg))
                    .await
                    .map_err(|e| format!("link to the helper broke: {e}"))?;
            }
            // Cancel-safe: a partly read line stays in `line` for the next round.
            read = lines.read_until(b'\n', &mut line) => {
                match read {
                    Ok(0) if line.len() > ipc::MAX_LINE => {
                        return Err("over-long line from the helper".into());
                    }
                    Ok(0) => return Err("the helper closed its link".into()),
                    Err(e) => return Err(format!("link to the helper broke: {e}")),
                    Ok(_) => {}
                }
                if line.last() != Some(&b'\n') {
                    continue;
                }
                match ipc::decode::<ToAgent>(&line[..line.len() - 1]) {
                    Ok(ToAgent::Hello { .. }) => {}
                    Ok(msg) => {
                        let _ = from_helper.try_send(msg);
                    }
                    Err(e) => tracing::warn!(error = %e, "unreadable message from the helper ignored"),
                }
                line.clear();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::agent::overlay::screen::LockReason;
    use tokio::io::AsyncBufReadExt;

    /// Records where it was asked to start a helper; the test plays the helper.
    struct Recorder(mpsc::UnboundedSender<(SocketAddr, String)>);
    struct NoProcess;

    impl Helper for NoProcess {
        fn exited(&mut self) -> bool {
            false
        }
        fn stop(&mut self) {}
    }

    impl Launcher for Recorder {
        fn launch(&mut self, addr: SocketAddr, token: &str) -> Result<Box<dyn Helper>, String> {
            let _ = self.0.send((addr, token.to_owned()));
            Ok(Box::new(NoProcess))
        }
    }

    async fn greet(addr: SocketAddr, token: &str) -> BufReader<TcpStream> {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(&ipc::encode(&ToAgent::Hello {
            token: token.to_owned(),
        }))
        .await
        .unwrap();
        BufReader::new(s)
    }

    #[tokio::test]
    async fn only_the_started_helper_gets_screens_and_a_broken_one_is_replaced() {
        let (tx, mut launched) = mpsc::unbounded_channel();
        let (overlay, mut from_helper) = Overlay::start(Box::new(Recorder(tx)));
        let screen = Screen::Locked {
            station: "PC 01".into(),
            why: LockReason::Free,
            message: None,
        };
        overlay.show(screen.clone());
        let (addr, token) = launched.recv().await.unwrap();
        assert!(addr.ip().is_loopback());

        // A local process that guessed the port but not the token gets nothing.
        let mut intruder = greet(addr, "not-the-token").await;
        let mut line = String::new();
        assert_eq!(intruder.read_line(&mut line).await.unwrap_or(0), 0);

        let mut helper = greet(addr, &token).await;
        helper.read_line(&mut line).await.unwrap();
        assert_eq!(
            ipc::decode::<ToHelper>(line.trim_end().as_bytes()),
            Ok(ToHelper::Show { screen })
        );
        let presence = ToAgent::Presence {
            user: Some("kim".into()),
            idle_s: Some(4),
        };
        helper
            .get_mut()
            .write_all(&ipc::encode(&presence))
            .await
            .unwrap();
        assert_eq!(from_helper.recv().await, Some(presence));

        // An over-long line breaks the link; a new helper is started with a new token.
        helper
            .get_mut()
            .write_all(&vec![b'x'; ipc::MAX_LINE + 2])
            .await
            .unwrap();
        let (_, second) = launched.recv().await.unwrap();
        assert_ne!(second, token);
    }
}
