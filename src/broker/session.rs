//! What the front does with each packet of one authenticated client, without I/O.
//!
//! rumqttd has no ACLs and gets several MQTT 3.1.1 answers wrong (no SUBACK 0x80, extra or
//! missing UNSUBACKs). This state machine sits between the socket and rumqttd's router:
//! it answers what the router would get wrong, drops what the ACL denies (acknowledging it,
//! since 3.1.1 has no negative ack), and forwards the rest. Pure, so property tests can
//! drive it with random packet sequences.

use super::codec::Frame;
use crate::domain::acl::{Acl, valid_topic};
use rumqttd::protocol::{
    Packet, PingResp, PubAck, PubAckReason, PubComp, PubCompReason, PubRec, PubRecReason, QoS,
    SubAck, SubscribeReasonCode, UnsubAck, Unsubscribe,
};
use std::collections::{HashMap, HashSet};

/// Where a packet goes.
#[derive(Debug, PartialEq)]
pub enum Out {
    /// Into rumqttd's router, as if the client had sent it.
    Router(Packet),
    /// Back to the client.
    Client(Packet),
}

/// Why the connection must end. `abrupt` closes publish the client's will.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Close {
    /// The client sent DISCONNECT: no will.
    Clean,
    /// A protocol violation; the reason is logged.
    Violation(&'static str),
}

/// Bounds that keep one client from growing the front's memory.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_subscriptions: usize,
    /// Denied QoS 2 publishes awaiting their PUBREL.
    pub max_pending: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_subscriptions: 64,
            max_pending: 64,
        }
    }
}

/// Counts the front reports as metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    pub publish_denied: u64,
    pub subscribe_denied: u64,
}

#[derive(Debug)]
pub struct ClientSession {
    acl: Acl,
    limits: Limits,
    /// Filters the router holds for this client, so UNSUBSCRIBE forwards only those.
    subscribed: HashSet<String>,
    /// SUBSCRIBE packets forwarded with some filters removed: the SUBACK to rebuild.
    pending_subacks: HashMap<u16, Vec<Slot>>,
    /// QoS 2 publishes we dropped: their PUBREL is ours to answer, not the router's.
    denied_qos2: HashSet<u16>,
    pub tally: Tally,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Denied,
    /// Granted by the router; filled from its SUBACK, in order.
    Router,
}

impl ClientSession {
    pub fn new(acl: Acl, limits: Limits) -> Self {
        Self {
            acl,
            limits,
            subscribed: HashSet::new(),
            pending_subacks: HashMap::new(),
            denied_qos2: HashSet::new(),
            tally: Tally::default(),
        }
    }

    pub fn acl(&self) -> &Acl {
        &self.acl
    }

    /// One packet from the client.
    pub fn from_client(&mut self, frame: Frame, out: &mut Vec<Out>) -> Result<(), Close> {
        match frame.packet {
            Packet::Publish(publish, _) => {
                let Some(meta) = frame.publish else {
                    return Err(Close::Violation("malformed PUBLISH header"));
                };
                let Ok(topic) = std::str::from_utf8(&publish.topic) else {
                    return Err(Close::Violation("publish topic is not UTF-8"));
                };
                if !valid_topic(topic) {
                    return Err(Close::Violation("publish topic is not a valid topic name"));
                }
                if meta.qos != QoS::AtMostOnce && meta.pkid == 0 {
                    return Err(Close::Violation("publish with QoS > 0 has packet id 0"));
                }
                if self.acl.may_publish(topic) {
                    out.push(Out::Router(Packet::Publish(publish, None)));
                    return Ok(());
                }
                self.tally.publish_denied += 1;
                tracing::debug!(topic, "publish denied by ACL");
                match meta.qos {
                    QoS::AtMostOnce => {}
                    QoS::AtLeastOnce => out.push(Out::Client(Packet::PubAck(
                        PubAck {
                            pkid: meta.pkid,
                            reason: PubAckReason::Success,
                        },
                        None,
                    ))),
                    QoS::ExactlyOnce => {
                        if self.denied_qos2.len() >= self.limits.max_pending
                            && !self.denied_qos2.contains(&meta.pkid)
                        {
                            return Err(Close::Violation("too many unreleased QoS 2 publishes"));
                        }
                        self.denied_qos2.insert(meta.pkid);
                        out.push(Out::Client(Packet::PubRec(
                            PubRec {
                                pkid: meta.pkid,
                                reason: PubRecReason::Success,
                            },
                            None,
                        )));
                    }
                }
            }
            Packet::PubRel(pubrel, _) => {
                if self.denied_qos2.remove(&pubrel.pkid) {
                    out.push(Out::Client(Packet::PubComp(
                        PubComp {
                            pkid: pubrel.pkid,
                            reason: PubCompReason::Success,
                        },
                        None,
                    )));
                } else {
                    out.push(Out::Router(Packet::PubRel(pubrel, None)));
                }
            }
            // Acks of what the router sent this client.
            Packet::PubAck(ack, _) => out.push(Out::Router(Packet::PubAck(ack, None))),
            Packet::PubRec(rec, _) => out.push(Out::Router(Packet::PubRec(rec, None))),
            Packet::PubComp(comp, _) => out.push(Out::Router(Packet::PubComp(comp, None))),
            Packet::Subscribe(mut subscribe, _) => {
                if subscribe.filters.is_empty() {
                    return Err(Close::Violation("SUBSCRIBE without filters"));
                }
                if subscribe.pkid == 0 {
                    return Err(Close::Violation("SUBSCRIBE with packet id 0"));
                }
                let mut slots = Vec::with_capacity(subscribe.filters.len());
                let mut room = self
                    .limits
                    .max_subscriptions
                    .saturating_sub(self.subscribed.len());
                subscribe.filters.retain(|f| {
                    let known = self.subscribed.contains(&f.path);
                    let ok = self.acl.may_subscribe(&f.path) && (known || room > 0);
                    if ok && !known {
                        room -= 1;
                    }
                    slots.push(if ok { Slot::Router } else { Slot::Denied });
                    ok
                });
                let denied = slots.iter().filter(|s| **s == Slot::Denied).count();
                self.tally.subscribe_denied += denied as u64;
                if subscribe.filters.is_empty() {
                    out.push(Out::Client(suback(subscribe.pkid, &slots, &[])));
                    return Ok(());
                }
                for f in &subscribe.filters {
                    self.subscribed.insert(f.path.clone());
                }
                if denied > 0 {
                    self.pending_subacks.insert(subscribe.pkid, slots);
                }
                out.push(Out::Router(Packet::Subscribe(subscribe, None)));
            }
            Packet::Unsubscribe(unsubscribe, _) => {
                if unsubscribe.pkid == 0 {
                    return Err(Close::Violation("UNSUBSCRIBE with packet id 0"));
                }
                // rumqttd answers once per filter and not at all for unknown filters: we
                // answer exactly once ourselves and forward only what it holds.
                let held: Vec<String> = unsubscribe
                    .filters
                    .into_iter()
                    .filter(|f| self.subscribed.remove(f))
                    .collect();
                if !held.is_empty() {
                    out.push(Out::Router(Packet::Unsubscribe(
                        Unsubscribe {
                            pkid: unsubscribe.pkid,
                            filters: held,
                        },
                        None,
                    )));
                }
                out.push(Out::Client(Packet::UnsubAck(
                    UnsubAck {
                        pkid: unsubscribe.pkid,
                        reasons: Vec::new(),
                    },
                    None,
                )));
            }
            Packet::PingReq(_) => out.push(Out::Client(Packet::PingResp(PingResp))),
            Packet::Disconnect(..) => return Err(Close::Clean),
            Packet::Connect(..) => return Err(Close::Violation("second CONNECT")),
            Packet::ConnAck(..)
            | Packet::SubAck(..)
            | Packet::UnsubAck(..)
            | Packet::PingResp(_) => {
                return Err(Close::Violation("server-only packet from a client"));
            }
        }
        Ok(())
    }

    /// One packet the router wants to send this client; `None` when the front already
    /// answered it.
    pub fn from_router(&mut self, packet: Packet) -> Option<Packet> {
        match packet {
            Packet::SubAck(ack, _) => match self.pending_subacks.remove(&ack.pkid) {
                Some(slots) => Some(suback(ack.pkid, &slots, &ack.return_codes)),
                None => Some(Packet::SubAck(ack, None)),
            },
            // Answered by the front, once, when the UNSUBSCRIBE arrived.
            Packet::UnsubAck(..) | Packet::PingResp(_) => None,
            other => Some(other),
        }
    }
}

/// A SUBACK with 0x80 for denied filters and the router's codes for the others, in order.
fn suback(pkid: u16, slots: &[Slot], router: &[SubscribeReasonCode]) -> Packet {
    let mut granted = router.iter();
    let return_codes = slots
        .iter()
        .map(|slot| match slot {
            Slot::Denied => SubscribeReasonCode::Failure,
            Slot::Router => granted
                .next()
                .copied()
                .unwrap_or(SubscribeReasonCode::Failure),
        })
        .collect();
    Packet::SubAck(SubAck { pkid, return_codes }, None)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::domain::acl::{Access, Rule};
    use proptest::prelude::*;
    use rumqttd::protocol::{Filter, PubRel, PubRelReason, RetainForwardRule, Subscribe};

    fn acl() -> Acl {
        Acl::new(vec![
            Rule {
                filter: "own/#".into(),
                access: Access::ReadWrite,
            },
            Rule {
                filter: "news".into(),
                access: Access::Read,
            },
        ])
    }

    fn publish(topic: &str, qos: QoS, pkid: u16) -> Frame {
        Frame {
            packet: crate::broker::codec::publish(topic, b"x", qos, false, pkid).unwrap(),
            publish: Some(crate::broker::codec::PublishMeta { qos, pkid }),
        }
    }

    fn frame(packet: Packet) -> Frame {
        Frame {
            packet,
            publish: None,
        }
    }

    fn filter(path: &str) -> Filter {
        Filter {
            path: path.into(),
            qos: QoS::AtLeastOnce,
            nolocal: false,
            preserve_retain: false,
            retain_forward_rule: RetainForwardRule::Never,
        }
    }

    fn run(s: &mut ClientSession, p: impl Into<Frame>) -> Vec<Out> {
        let mut out = Vec::new();
        s.from_client(p.into(), &mut out).unwrap();
        out
    }

    impl From<Packet> for Frame {
        fn from(packet: Packet) -> Frame {
            frame(packet)
        }
    }

    #[test]
    fn denied_publishes_are_acknowledged_and_dropped() {
        let mut s = ClientSession::new(acl(), Limits::default());
        assert!(run(&mut s, publish("other/x", QoS::AtMostOnce, 0)).is_empty());
        assert_eq!(
            run(&mut s, publish("other/x", QoS::AtLeastOnce, 7)),
            vec![Out::Client(Packet::PubAck(
                PubAck {
                    pkid: 7,
                    reason: PubAckReason::Success
                },
                None
            ))]
        );
        let rec = run(&mut s, publish("other/x", QoS::ExactlyOnce, 8));
        assert!(matches!(&rec[..], [Out::Client(Packet::PubRec(r, _))] if r.pkid == 8));
        let rel = Packet::PubRel(
            PubRel {
                pkid: 8,
                reason: PubRelReason::Success,
            },
            None,
        );
        let comp = run(&mut s, rel);
        assert!(matches!(&comp[..], [Out::Client(Packet::PubComp(c, _))] if c.pkid == 8));
        assert_eq!(s.tally.publish_denied, 3);
        let ok = run(&mut s, publish("own/a", QoS::AtLeastOnce, 9));
        assert!(matches!(&ok[..], [Out::Router(Packet::Publish(..))]));
    }

    #[test]
    fn suback_mixes_denials_with_router_grants() {
        let mut s = ClientSession::new(acl(), Limits::default());
        let sub = Packet::Subscribe(
            Subscribe {
                pkid: 3,
                filters: vec![
                    filter("#"),
                    filter("own/+"),
                    filter("$SYS/#"),
                    filter("news"),
                ],
            },
            None,
        );
        let out = run(&mut s, sub);
        let [Out::Router(Packet::Subscribe(fwd, _))] = &out[..] else {
            panic!("{out:?}")
        };
        assert_eq!(
            fwd.filters
                .iter()
                .map(|f| f.path.as_str())
                .collect::<Vec<_>>(),
            ["own/+", "news"]
        );
        let from_router = Packet::SubAck(
            SubAck {
                pkid: 3,
                return_codes: vec![SubscribeReasonCode::QoS1, SubscribeReasonCode::QoS0],
            },
            None,
        );
        let Some(Packet::SubAck(ack, _)) = s.from_router(from_router) else {
            panic!()
        };
        assert_eq!(
            ack.return_codes,
            [
                SubscribeReasonCode::Failure,
                SubscribeReasonCode::QoS1,
                SubscribeReasonCode::Failure,
                SubscribeReasonCode::QoS0
            ]
        );
    }

    #[test]
    fn unsubscribe_is_answered_once_and_forwards_only_held_filters() {
        let mut s = ClientSession::new(acl(), Limits::default());
        run(
            &mut s,
            Packet::Subscribe(
                Subscribe {
                    pkid: 1,
                    filters: vec![filter("own/a")],
                },
                None,
            ),
        );
        let out = run(
            &mut s,
            Packet::Unsubscribe(
                Unsubscribe {
                    pkid: 2,
                    filters: vec!["own/a".into(), "never/held".into()],
                },
                None,
            ),
        );
        assert!(
            matches!(&out[0], Out::Router(Packet::Unsubscribe(u, _)) if u.filters == ["own/a"])
        );
        assert!(matches!(&out[1], Out::Client(Packet::UnsubAck(u, _)) if u.pkid == 2));
        let router_ack = Packet::UnsubAck(
            UnsubAck {
                pkid: 2,
                reasons: Vec::new(),
            },
            None,
        );
        assert_eq!(s.from_router(router_ack), None);
    }

    fn any_topic() -> impl Strategy<Value = String> {
        prop::collection::vec(
            prop::sample::select(vec!["own", "news", "a", "+", "#", "$SYS", ""]),
            1..4,
        )
        .prop_map(|l| l.join("/"))
    }

    fn any_packet() -> impl Strategy<Value = Frame> {
        let qos = prop::sample::select(vec![QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]);
        prop_oneof![
            (any_topic(), qos, 1u16..4).prop_map(|(t, q, p)| publish(&t, q, p)),
            (prop::collection::vec(any_topic(), 0..4), 0u16..4).prop_map(|(fs, pkid)| {
                frame(Packet::Subscribe(
                    Subscribe {
                        pkid,
                        filters: fs.iter().map(|f| filter(f)).collect(),
                    },
                    None,
                ))
            }),
            (prop::collection::vec(any_topic(), 0..3), 0u16..4).prop_map(|(fs, pkid)| {
                frame(Packet::Unsubscribe(Unsubscribe { pkid, filters: fs }, None))
            }),
            (1u16..4).prop_map(|pkid| frame(Packet::PubRel(
                PubRel {
                    pkid,
                    reason: PubRelReason::Success
                },
                None
            ))),
            Just(()).prop_map(|_| frame(Packet::PingReq(rumqttd::protocol::PingReq))),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        /// Whatever a client sends, nothing the ACL denies reaches the router, every
        /// PUBLISH with QoS > 0 is answered, and the state stays bounded.
        #[test]
        fn acl_is_never_bypassed(packets in prop::collection::vec(any_packet(), 0..40)) {
            let mut s = ClientSession::new(acl(), Limits { max_subscriptions: 3, max_pending: 2 });
            for p in packets {
                let mut out = Vec::new();
                let answered_by_router = matches!(p.publish, Some(m) if m.qos != QoS::AtMostOnce)
                    && matches!(p.packet, Packet::Publish(..));
                if s.from_client(p, &mut out).is_err() {
                    break;
                }
                for o in &out {
                    match o {
                        Out::Router(Packet::Publish(pb, _)) => {
                            let t = std::str::from_utf8(&pb.topic).unwrap();
                            prop_assert!(s.acl().may_publish(t), "forwarded denied publish {t}");
                        }
                        Out::Router(Packet::Subscribe(sb, _)) => {
                            for f in &sb.filters {
                                prop_assert!(s.acl().may_subscribe(&f.path), "forwarded denied filter {}", f.path);
                            }
                        }
                        _ => {}
                    }
                }
                if answered_by_router {
                    prop_assert_eq!(out.len(), 1);
                }
                prop_assert!(s.subscribed.len() <= 3);
                prop_assert!(s.denied_qos2.len() <= 2);
            }
        }
    }
}
