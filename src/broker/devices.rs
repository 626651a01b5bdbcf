//! The device drivers' own link to the router: subscribe to plug topics at any time,
//! publish commands to them, receive what they report.
//!
//! A second in-process link beside the controller's (`mirror.rs`), so the plug side can
//! come and go with the device table without touching the station mirror. Like every
//! link it never reaches the network front, so no ACL applies: what it may touch is
//! decided by its caller (`crate::devices::mqtt`), which only builds plug topics from
//! validated device configuration. Its packets go through the [`Feeder`] thread, so a
//! full router queue never blocks a runtime worker.
//!
//! rumqttd's links support UNSUBSCRIBE, so filters of removed devices are really
//! dropped; subscribing twice to a filter is a no-op (the router keeps one per link).
//! Retained messages are forwarded on a new subscription, as to any client.

use super::codec;
use super::feeder::{Feeder, Key, Stopped};
use crate::domain::acl;
use bytes::Bytes;
use rumqttd::Notification;
use rumqttd::local::LinkRx;
use rumqttd::protocol::{Filter, Packet, QoS, RetainForwardRule, Subscribe, Unsubscribe};
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};

/// The device link, as the feeder knows it (client connections count up from 1, the
/// controller's link is 0).
pub const DEVICES_KEY: Key = u64::MAX;
/// Its client id in rumqttd. Clients' ids are always `<account>|<id>` (see
/// `connection::internal_client_id`), so no client can take this one over.
pub const CLIENT_ID: &str = "venued-devices";

/// Why the link refused or could not do something.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("invalid MQTT topic filter {0:?}")]
    Filter(String),
    #[error("invalid MQTT topic {0:?} (empty, a wildcard, or a $ topic)")]
    Topic(String),
    #[error("cannot encode an MQTT publish to {0:?} (too large)")]
    Encode(String),
    #[error("the MQTT router has stopped")]
    Stopped,
}

impl From<Stopped> for LinkError {
    fn from(_: Stopped) -> Self {
        LinkError::Stopped
    }
}

/// One message a device published (or a retained one, on subscribing).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Incoming {
    pub topic: String,
    pub payload: Bytes,
    pub retained: bool,
}

/// The link: a cheap, cloneable sending half and the one receiving half.
#[derive(Debug)]
pub struct DeviceLink {
    pub tx: DeviceTx,
    pub rx: DeviceRx,
}

impl DeviceLink {
    pub(super) fn new(feeder: Feeder, rx: LinkRx) -> Self {
        DeviceLink {
            tx: DeviceTx {
                feeder,
                pkid: Arc::new(AtomicU16::new(0)),
            },
            rx: DeviceRx { rx },
        }
    }

    pub fn split(self) -> (DeviceTx, DeviceRx) {
        (self.tx, self.rx)
    }
}

/// Subscribe, unsubscribe and publish; clones share the link.
#[derive(Clone, Debug)]
pub struct DeviceTx {
    feeder: Feeder,
    pkid: Arc<AtomicU16>,
}

impl DeviceTx {
    /// Receive what matches `filter` from now on (and its retained messages).
    /// Idempotent. A `$` filter is refused here: rumqttd would drop the whole link for it.
    pub async fn subscribe(&self, filter: &str) -> Result<(), LinkError> {
        check_filter(filter)?;
        let packet = Packet::Subscribe(
            Subscribe {
                pkid: self.next_pkid(),
                filters: vec![Filter {
                    path: filter.to_owned(),
                    // In-process: nothing is lost between the router and us, and QoS 0
                    // forwards need no PUBACK back.
                    qos: QoS::AtMostOnce,
                    nolocal: false,
                    preserve_retain: false,
                    retain_forward_rule: RetainForwardRule::OnEverySubscribe,
                }],
            },
            None,
        );
        Ok(self.feeder.packets(DEVICES_KEY, vec![packet]).await?)
    }

    /// Stop receiving what matches `filter` (exactly as subscribed). Unknown filters are
    /// ignored by the router.
    pub async fn unsubscribe(&self, filter: &str) -> Result<(), LinkError> {
        check_filter(filter)?;
        let packet = Packet::Unsubscribe(
            Unsubscribe {
                pkid: self.next_pkid(),
                filters: vec![filter.to_owned()],
            },
            None,
        );
        Ok(self.feeder.packets(DEVICES_KEY, vec![packet]).await?)
    }

    /// Publish at QoS 1, like the controller's own publishes. Never retained unless asked
    /// (a retained command would replay on every reconnect of the device).
    pub async fn publish(
        &self,
        topic: &str,
        payload: &[u8],
        retain: bool,
    ) -> Result<(), LinkError> {
        self.publish_all(&[(topic, payload)], retain).await
    }

    /// Several publishes handed over as one batch, in order.
    pub async fn publish_all(
        &self,
        messages: &[(&str, &[u8])],
        retain: bool,
    ) -> Result<(), LinkError> {
        let mut batch = Vec::with_capacity(messages.len());
        for (topic, payload) in messages {
            if !acl::valid_topic(topic) || topic.starts_with('$') {
                return Err(LinkError::Topic((*topic).to_owned()));
            }
            let packet = codec::publish(topic, payload, QoS::AtLeastOnce, retain, self.next_pkid())
                .ok_or_else(|| LinkError::Encode((*topic).to_owned()))?;
            batch.push(packet);
        }
        Ok(self.feeder.packets(DEVICES_KEY, batch).await?)
    }

    /// Wait until everything handed over so far has reached the router.
    pub async fn sync(&self) -> Result<(), LinkError> {
        Ok(self.feeder.sync().await?)
    }

    fn next_pkid(&self) -> u16 {
        // 0 is not a valid packet id for QoS 1.
        loop {
            let id = self.pkid.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
            if id != 0 {
                return id;
            }
        }
    }
}

fn check_filter(filter: &str) -> Result<(), LinkError> {
    if acl::valid_filter(filter) && !filter.starts_with('$') {
        Ok(())
    } else {
        Err(LinkError::Filter(filter.to_owned()))
    }
}

/// What devices publish on the subscribed filters.
#[derive(Debug)]
pub struct DeviceRx {
    rx: LinkRx,
}

impl DeviceRx {
    /// The next message; `None` once the router dropped the link (the broker stopped).
    /// Acknowledgements of our own packets are skipped.
    pub async fn recv(&mut self) -> Option<Incoming> {
        loop {
            match self.rx.next().await {
                Ok(Some(Notification::Forward(f))) => {
                    return Some(Incoming {
                        topic: String::from_utf8_lossy(&f.publish.topic).into_owned(),
                        payload: f.publish.payload,
                        retained: f.publish.retain,
                    });
                }
                Ok(Some(Notification::Unschedule)) => {
                    // Our outgoing buffer was full; ask for the rest.
                    if self.rx.wake().await.is_err() {
                        return None;
                    }
                }
                Ok(Some(Notification::Disconnect(..))) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }
}
