//! MQTT 3.1.1 framing on top of rumqttd's v4 codec.
//!
//! rumqttd keeps a PUBLISH's QoS and packet id crate-private, yet the front must read them
//! (to acknowledge a denied publish) and set them (the controller's QoS 1 retained
//! state). So a frame's QoS and id are read from its bytes before rumqttd decodes it, and
//! our own publishes are built as bytes and decoded by rumqttd.

use bytes::{Buf, BufMut, BytesMut};
use rumqttd::protocol::v4::{V4, check};
use rumqttd::protocol::{Error as CodecError, Packet, Protocol, QoS};

/// A decoded packet, with what rumqttd hides of a PUBLISH.
#[derive(Debug)]
pub struct Frame {
    pub packet: Packet,
    pub publish: Option<PublishMeta>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PublishMeta {
    pub qos: QoS,
    pub pkid: u16,
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("packet of {0} bytes is over mqtt.max-packet-size")]
    TooBig(usize),
    /// Not MQTT 3.1.1: answered with CONNACK 1 when it is the CONNECT.
    #[error("unsupported protocol: {0}")]
    Protocol(CodecError),
    #[error("malformed packet: {0}")]
    Malformed(CodecError),
}

const PUBLISH: u8 = 3;

/// The next complete packet in `buf`, consuming it; `None` until one has fully arrived.
pub fn read(buf: &mut BytesMut, max_size: usize) -> Result<Option<Frame>, ReadError> {
    let header = match check(buf.iter(), max_size) {
        Ok(h) => h,
        Err(CodecError::InsufficientBytes(_)) => return Ok(None),
        Err(CodecError::PayloadSizeLimitExceeded(n)) => return Err(ReadError::TooBig(n)),
        Err(e) => return Err(ReadError::Malformed(e)),
    };
    let publish = (header.byte1 >> 4 == PUBLISH)
        .then(|| {
            publish_meta(
                header.byte1,
                &buf[header.fixed_header_len..header.frame_length()],
            )
        })
        .flatten();
    // Decode from an exact-size copy: rumqttd's packets borrow their buffer, and a
    // retained message kept in the router would otherwise pin the whole read buffer.
    let mut one = BytesMut::from(&buf[..header.frame_length()]);
    buf.advance(header.frame_length());
    match V4.read_mut(&mut one, max_size) {
        Ok(packet) => Ok(Some(Frame { packet, publish })),
        Err(e @ (CodecError::InvalidProtocol | CodecError::InvalidProtocolLevel(_))) => {
            Err(ReadError::Protocol(e))
        }
        Err(e) => Err(ReadError::Malformed(e)),
    }
}

/// QoS from the fixed header's flags; the packet id follows the topic when QoS > 0.
/// `None` for a malformed frame, which rumqttd's decoder then refuses.
fn publish_meta(byte1: u8, body: &[u8]) -> Option<PublishMeta> {
    let qos = match (byte1 >> 1) & 0b11 {
        0 => {
            return Some(PublishMeta {
                qos: QoS::AtMostOnce,
                pkid: 0,
            });
        }
        1 => QoS::AtLeastOnce,
        2 => QoS::ExactlyOnce,
        _ => return None,
    };
    let topic_len = u16::from_be_bytes([*body.first()?, *body.get(1)?]) as usize;
    let at = 2 + topic_len;
    let pkid = u16::from_be_bytes([*body.get(at)?, *body.get(at + 1)?]);
    Some(PublishMeta { qos, pkid })
}

pub fn write(packet: Packet, out: &mut BytesMut) -> Result<(), CodecError> {
    V4.write(packet, out).map(|_| ())
}

/// A CONNACK; written by hand because rumqttd's encoder maps our 3.1.1 codes through
/// its MQTT 5 enum.
pub fn connack(session_present: bool, code: u8, out: &mut BytesMut) {
    out.put_slice(&[0x20, 0x02, u8::from(session_present), code]);
}

/// A PUBLISH for rumqttd's router with the QoS and id we choose.
pub fn publish(topic: &str, payload: &[u8], qos: QoS, retain: bool, pkid: u16) -> Option<Packet> {
    let qos_bits = qos as u8;
    let id_len = if qos == QoS::AtMostOnce { 0 } else { 2 };
    let remaining = 2 + topic.len() + id_len + payload.len();
    let mut buf = BytesMut::with_capacity(remaining + 5);
    buf.put_u8((PUBLISH << 4) | (qos_bits << 1) | u8::from(retain));
    let mut len = remaining;
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        buf.put_u8(byte);
        if len == 0 {
            break;
        }
    }
    buf.put_u16(u16::try_from(topic.len()).ok()?);
    buf.put_slice(topic.as_bytes());
    if id_len > 0 {
        buf.put_u16(pkid);
    }
    buf.put_slice(payload);
    match read(&mut buf, usize::MAX >> 1) {
        Ok(Some(frame)) => Some(frame.packet),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn publish_round_trips_with_its_qos_and_id() {
        let p = publish("a/b", b"hello", QoS::ExactlyOnce, true, 513).unwrap();
        let mut buf = BytesMut::new();
        write(p, &mut buf).unwrap();
        let frame = read(&mut buf, 1024).unwrap().unwrap();
        assert_eq!(
            frame.publish,
            Some(PublishMeta {
                qos: QoS::ExactlyOnce,
                pkid: 513
            })
        );
        let Packet::Publish(p, _) = frame.packet else {
            panic!()
        };
        assert!(p.retain);
        assert_eq!(&p.topic[..], b"a/b");
        assert_eq!(&p.payload[..], b"hello");
        assert!(buf.is_empty());
    }

    #[test]
    fn partial_frames_wait_and_oversize_is_refused() {
        let mut buf = BytesMut::from(&[0x30u8, 0x05, 0x00][..]);
        assert!(read(&mut buf, 1024).unwrap().is_none());
        let mut big = BytesMut::from(&[0x30u8, 0xff, 0xff, 0x03][..]);
        assert!(matches!(read(&mut big, 1024), Err(ReadError::TooBig(_))));
    }

    #[test]
    fn mqtt5_connect_is_a_protocol_refusal() {
        // CONNECT, protocol "MQTT" level 5.
        let mut buf = BytesMut::from(
            &[
                0x10u8, 0x0d, 0, 4, b'M', b'Q', b'T', b'T', 5, 2, 0, 60, 0, 0, 0,
            ][..],
        );
        assert!(matches!(read(&mut buf, 1024), Err(ReadError::Protocol(_))));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]
        /// Arbitrary bytes never panic the decoder, and a refused or incomplete read
        /// never claims more than the buffer held.
        #[test]
        fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            let mut buf = BytesMut::from(&bytes[..]);
            for _ in 0..64 {
                match read(&mut buf, 256) {
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => break,
                }
            }
        }

        /// Valid-looking frames with random bodies: every packet type, random lengths.
        #[test]
        fn random_frames_never_panic(kind in 0u8..16, flags in 0u8..16, body in prop::collection::vec(any::<u8>(), 0..120)) {
            let mut buf = BytesMut::new();
            buf.put_u8((kind << 4) | flags);
            buf.put_u8(body.len() as u8);
            buf.put_slice(&body);
            let _ = read(&mut buf, 256);
        }
    }
}
