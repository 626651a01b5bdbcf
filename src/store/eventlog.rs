//! The append-only, hash-chained event log.
//!
//! Each event's hash is `sha256(prev_hash | seq | body)`. Every `SEGMENT_LEN` events the
//! segment is sealed: a seal records the segment's first `prev_hash` and last hash and is
//! itself chained to the previous seal. Retention may later prune old events; the seals
//! stay, so verification of what remains never breaks.

use super::StoreError;
use super::tables::{EVENTS, SEALS};
use crate::domain::{Actor, EventKind};
use jiff::Timestamp;
use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, WriteTransaction};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub const SEGMENT_LEN: u64 = 1024;
pub type Hash = [u8; 32];
const ZERO: Hash = [0; 32];

/// What an event says, hashed as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct EventBody {
    pub at: Timestamp,
    pub actor: Actor,
    /// The idempotency key of the request that caused it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    #[serde(flatten)]
    pub kind: EventKind,
}

/// An event as read back: the body plus its place in the chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Event {
    pub seq: u64,
    #[serde(flatten)]
    pub body: EventBody,
    /// This event's link in the hash chain (hex SHA-256).
    pub hash: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seal {
    pub index: u64,
    pub first_seq: u64,
    pub last_seq: u64,
    pub first_prev_hash: String,
    pub head_hash: String,
    pub prev_seal_hash: String,
    pub sealed_at: Timestamp,
    pub hash: String,
}

/// Where the chain stands; derived from the tables at open, advanced by appends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainHead {
    pub next_seq: u64,
    pub last_hash: Hash,
    pub next_seal: u64,
    pub last_seal_hash: Hash,
    /// First seq of the open (unsealed) segment, and the hash before it.
    pub segment_first: u64,
    pub segment_prev_hash: Hash,
}

fn event_hash(prev: &Hash, seq: u64, body: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update(prev);
    h.update(seq.to_be_bytes());
    h.update(body);
    h.finalize().into()
}

fn seal_hash(s: &Seal) -> Result<Hash, StoreError> {
    let mut h = Sha256::new();
    h.update(unhex(&s.prev_seal_hash)?);
    h.update(s.index.to_be_bytes());
    h.update(s.first_seq.to_be_bytes());
    h.update(s.last_seq.to_be_bytes());
    h.update(unhex(&s.first_prev_hash)?);
    h.update(unhex(&s.head_hash)?);
    h.update(s.sealed_at.to_string().as_bytes());
    Ok(h.finalize().into())
}

pub fn hex(h: &Hash) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Result<Hash, StoreError> {
    let bad = || StoreError::Corrupt(format!("bad hash {s:?}"));
    if s.len() != 64 || !s.is_ascii() {
        return Err(bad());
    }
    let mut out = ZERO;
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&s[i * 2..i * 2 + 2], 16).map_err(|_| bad())?;
    }
    Ok(out)
}

/// Split a stored event value into (prev, hash, body).
fn split(raw: &[u8]) -> Option<(Hash, Hash, &[u8])> {
    let prev: Hash = raw.get(..32)?.try_into().ok()?;
    let hash: Hash = raw.get(32..64)?.try_into().ok()?;
    Some((prev, hash, raw.get(64..)?))
}

pub fn decode(seq: u64, raw: &[u8]) -> Result<Event, StoreError> {
    let (_, hash, body) =
        split(raw).ok_or_else(|| StoreError::Corrupt(format!("event {seq} is truncated")))?;
    Ok(Event {
        seq,
        body: serde_json::from_slice(body)?,
        hash: hex(&hash),
    })
}

impl ChainHead {
    pub fn load(txn: &redb::ReadTransaction) -> Result<Self, StoreError> {
        let events = txn.open_table(EVENTS)?;
        let seals = txn.open_table(SEALS)?;
        let (next_seal, last_seal_hash, segment_first, segment_prev_hash) = match seals.last()? {
            Some((_, v)) => {
                let seal: Seal = serde_json::from_slice(v.value())?;
                (
                    seal.index + 1,
                    unhex(&seal.hash)?,
                    seal.last_seq + 1,
                    unhex(&seal.head_hash)?,
                )
            }
            None => (0, ZERO, 1, ZERO),
        };
        let (next_seq, last_hash) = match events.last()? {
            Some((k, v)) => {
                let (_, hash, _) = split(v.value()).ok_or_else(|| {
                    StoreError::Corrupt(format!("event {} is truncated", k.value()))
                })?;
                (k.value() + 1, hash)
            }
            None => (segment_first, segment_prev_hash),
        };
        Ok(Self {
            next_seq,
            last_hash,
            next_seal,
            last_seal_hash,
            segment_first,
            segment_prev_hash,
        })
    }

    /// Append one event inside the caller's write transaction; returns it as stored.
    pub fn append(&mut self, txn: &WriteTransaction, body: EventBody) -> Result<Event, StoreError> {
        let bytes = serde_json::to_vec(&body)?;
        let seq = self.next_seq;
        let hash = event_hash(&self.last_hash, seq, &bytes);
        let mut raw = Vec::with_capacity(64 + bytes.len());
        raw.extend_from_slice(&self.last_hash);
        raw.extend_from_slice(&hash);
        raw.extend_from_slice(&bytes);
        txn.open_table(EVENTS)?.insert(seq, raw.as_slice())?;
        self.next_seq += 1;
        self.last_hash = hash;
        if seq + 1 - self.segment_first >= SEGMENT_LEN {
            self.seal(txn, body.at)?;
        }
        Ok(Event {
            seq,
            body,
            hash: hex(&hash),
        })
    }

    fn seal(&mut self, txn: &WriteTransaction, at: Timestamp) -> Result<(), StoreError> {
        let mut seal = Seal {
            index: self.next_seal,
            first_seq: self.segment_first,
            last_seq: self.next_seq - 1,
            first_prev_hash: hex(&self.segment_prev_hash),
            head_hash: hex(&self.last_hash),
            prev_seal_hash: hex(&self.last_seal_hash),
            sealed_at: at,
            hash: String::new(),
        };
        let h = seal_hash(&seal)?;
        seal.hash = hex(&h);
        txn.open_table(SEALS)?
            .insert(seal.index, serde_json::to_vec(&seal)?.as_slice())?;
        self.next_seal += 1;
        self.last_seal_hash = h;
        self.segment_first = self.next_seq;
        self.segment_prev_hash = self.last_hash;
        Ok(())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct VerifyReport {
    pub events: u64,
    pub seals: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    pub head: String,
    /// The first broken link, if any.
    pub broken: Option<BrokenLink>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct BrokenLink {
    /// The event (or, with `seal`, the seal index) where the chain breaks.
    pub seq: u64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub seal: bool,
    pub reason: String,
}

/// Walk seals and events; report the first broken link.
pub fn verify(db: &impl ReadableDatabase) -> Result<VerifyReport, StoreError> {
    let txn = db.begin_read()?;
    let events = txn.open_table(EVENTS)?;
    let seals = txn.open_table(SEALS)?;
    let mut report = VerifyReport {
        events: events.len()?,
        seals: seals.len()?,
        first_seq: None,
        last_seq: None,
        head: hex(&ZERO),
        broken: None,
    };
    let broken = |seq, seal, reason: String| BrokenLink { seq, seal, reason };

    // Seals: chained to each other and contiguous.
    let mut seal_heads = std::collections::BTreeMap::new();
    let mut prev_seal = ZERO;
    let mut expect_first = None;
    for entry in seals.iter()? {
        let (k, v) = entry?;
        let seal: Seal = match serde_json::from_slice(v.value()) {
            Ok(s) => s,
            Err(e) => {
                report.broken = Some(broken(k.value(), true, format!("undecodable seal: {e}")));
                return Ok(report);
            }
        };
        let problem = if seal.index != k.value() {
            Some("seal index does not match its key".to_owned())
        } else if unhex(&seal.prev_seal_hash)? != prev_seal {
            Some("seal does not chain to the previous seal".to_owned())
        } else if seal_hash(&seal)? != unhex(&seal.hash)? {
            Some("seal hash does not match its contents".to_owned())
        } else if expect_first.is_some_and(|f| f != seal.first_seq) {
            Some("seal does not start where the previous one ended".to_owned())
        } else {
            None
        };
        if let Some(reason) = problem {
            report.broken = Some(broken(seal.index, true, reason));
            return Ok(report);
        }
        prev_seal = unhex(&seal.hash)?;
        expect_first = Some(seal.last_seq + 1);
        seal_heads.insert(seal.last_seq, (unhex(&seal.head_hash)?, seal.index));
    }

    // Events: each links to the one before; the first retained one links to a seal.
    let mut prev: Option<(u64, Hash)> = None;
    for entry in events.iter()? {
        let (k, v) = entry?;
        let seq = k.value();
        let Some((stored_prev, stored_hash, body)) = split(v.value()) else {
            report.broken = Some(broken(seq, false, "record is truncated".into()));
            return Ok(report);
        };
        let expected_prev = match prev {
            Some((p_seq, _)) if p_seq + 1 != seq => {
                report.broken = Some(broken(
                    seq,
                    false,
                    format!("events {} to {} are missing", p_seq + 1, seq - 1),
                ));
                return Ok(report);
            }
            Some((_, h)) => h,
            None if seq == 1 => ZERO,
            None => match seal_heads.get(&(seq - 1)) {
                Some((h, _)) => *h,
                None => {
                    report.broken = Some(broken(
                        seq,
                        false,
                        format!("events before {seq} are gone and no seal covers them"),
                    ));
                    return Ok(report);
                }
            },
        };
        if stored_prev != expected_prev {
            report.broken = Some(broken(
                seq,
                false,
                "does not link to the previous event".into(),
            ));
            return Ok(report);
        }
        if event_hash(&stored_prev, seq, body) != stored_hash {
            report.broken = Some(broken(
                seq,
                false,
                "hash does not match its contents (edited?)".into(),
            ));
            return Ok(report);
        }
        if let Some((head, index)) = seal_heads.get(&seq)
            && *head != stored_hash
        {
            report.broken = Some(broken(
                *index,
                true,
                format!("seal's head does not match event {seq}"),
            ));
            return Ok(report);
        }
        if serde_json::from_slice::<EventBody>(body).is_err() {
            report.broken = Some(broken(seq, false, "body is not a valid event".into()));
            return Ok(report);
        }
        report.first_seq.get_or_insert(seq);
        report.last_seq = Some(seq);
        prev = Some((seq, stored_hash));
    }
    if let Some((_, h)) = prev {
        report.head = hex(&h);
    }
    Ok(report)
}
