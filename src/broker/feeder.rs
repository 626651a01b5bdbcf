//! The one thread that hands packets to rumqttd's router.
//!
//! `LinkTx::send` blocks while the router's queue is full; called from async tasks it
//! stalled every runtime worker under a publish flood, and with them the HTTP API (seen in
//! `cargo bench --bench mqtt`). Connections therefore give their packets to this thread
//! over a bounded async channel: when the router falls behind, the feeder blocks, the
//! channel fills, connections wait without blocking a worker, stop reading their sockets,
//! and TCP slows the clients down. Per connection, order is kept (one FIFO).

use rumqttd::local::LinkTx;
use rumqttd::protocol::Packet;
use std::collections::HashMap;
use tokio::sync::{mpsc, oneshot};

/// Batches queued for the router before connections wait.
const QUEUE: usize = 1024;

pub type Key = u64;

enum Msg {
    Register(Key, Box<LinkTx>),
    Packets(Key, Vec<Packet>),
    /// Last packets (a will, the DISCONNECT), then forget the link.
    Close(Key, Vec<Packet>),
    /// Answered once everything queued before it was handed over (for tests and boot).
    Sync(oneshot::Sender<()>),
}

#[derive(Clone, Debug)]
pub struct Feeder {
    tx: mpsc::Sender<Msg>,
}

#[derive(Debug, thiserror::Error)]
#[error("the MQTT router feeder has stopped")]
pub struct Stopped;

impl Feeder {
    /// Start the feeder thread. It ends when every `Feeder` handle is dropped.
    pub fn spawn() -> std::io::Result<Feeder> {
        let (tx, rx) = mpsc::channel(QUEUE);
        std::thread::Builder::new()
            .name("mqtt-feeder".into())
            .spawn(move || run(rx))?;
        Ok(Feeder { tx })
    }

    pub async fn register(&self, key: Key, link: LinkTx) -> Result<(), Stopped> {
        self.send(Msg::Register(key, Box::new(link))).await
    }

    /// Hand packets to the router, in order; waits only while the feeder is behind.
    pub async fn packets(&self, key: Key, packets: Vec<Packet>) -> Result<(), Stopped> {
        if packets.is_empty() {
            return Ok(());
        }
        self.send(Msg::Packets(key, packets)).await
    }

    pub async fn close(&self, key: Key, last: Vec<Packet>) -> Result<(), Stopped> {
        self.send(Msg::Close(key, last)).await
    }

    /// Wait until everything queued so far has been handed to the router.
    pub async fn sync(&self) -> Result<(), Stopped> {
        let (tx, rx) = oneshot::channel();
        self.send(Msg::Sync(tx)).await?;
        rx.await.map_err(|_| Stopped)
    }

    async fn send(&self, msg: Msg) -> Result<(), Stopped> {
        self.tx.send(msg).await.map_err(|_| Stopped)
    }
}

fn run(mut rx: mpsc::Receiver<Msg>) {
    let mut links: HashMap<Key, Box<LinkTx>> = HashMap::new();
    while let Some(msg) = rx.blocking_recv() {
        match msg {
            Msg::Register(key, link) => {
                links.insert(key, link);
            }
            Msg::Packets(key, packets) => {
                let delivered = links
                    .get_mut(&key)
                    .is_some_and(|link| hand_over(link, packets));
                if !delivered {
                    // The router dropped this link (taken over); its task learns that
                    // from its receiving side.
                    links.remove(&key);
                }
            }
            Msg::Close(key, last) => {
                if let Some(mut link) = links.remove(&key) {
                    hand_over(&mut link, last);
                }
            }
            Msg::Sync(done) => {
                let _ = done.send(());
            }
        }
    }
}

/// Queue every packet on the link, then wake the router once for the whole batch.
fn hand_over(link: &mut LinkTx, mut packets: Vec<Packet>) -> bool {
    let Some(last) = packets.pop() else {
        return true;
    };
    link.buffer().extend(packets);
    // `send` is an async fn that never awaits: it pushes and blocks on the router's
    // channel, which is what this thread is for.
    matches!(super::block_once(link.send(last)), Some(Ok(_)))
}
