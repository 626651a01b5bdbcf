//! The tamper-evident event log: `venued audit verify` names the first broken link, and
//! pruning sealed segments never breaks verification.

use crate::support::*;
#[allow(unused_imports)]
use redb::ReadableTableMetadata;
use redb::{ReadableTable, TableDefinition};
use std::path::Path;
use venued::engine::EngineConfig;

const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
const SEALS: TableDefinition<u64, &[u8]> = TableDefinition::new("seals");

/// A store with enough events to seal at least two segments (1024 events each). The
/// commands go in concurrently so group commit keeps this quick.
async fn busy_store(dir: &Path) {
    let clock = trusted_clock();
    let deep_queue = EngineConfig {
        queue_capacity: 4096,
        ..EngineConfig::default()
    };
    let engine = start_engine(dir, &clock, deep_queue);
    let ids: Vec<String> = (0..1100).map(|i| format!("pc-{i}")).collect();
    let adds: Vec<_> = ids
        .iter()
        .map(|id| {
            let (engine, id) = (engine.clone(), id.clone());
            tokio::spawn(async move { add_stations(&engine, &[&id]).await })
        })
        .collect();
    for t in adds {
        t.await.unwrap();
    }
    let starts: Vec<_> = ids
        .iter()
        .take(1000)
        .map(|id| {
            let (engine, id) = (engine.clone(), id.clone());
            tokio::spawn(async move { start_session(&engine, &id, 600).await })
        })
        .collect();
    for t in starts {
        t.await.unwrap();
    }
    engine.shutdown().await;
}

/// Edit the store as an attacker with file access would.
#[allow(clippy::disallowed_methods)]
fn tamper(dir: &Path, f: impl FnOnce(&redb::WriteTransaction)) {
    let db = redb::Database::create(dir.join("venued.redb")).unwrap();
    let txn = db.begin_write().unwrap();
    f(&txn);
    txn.commit().unwrap();
}

fn verify(dir: &Path) -> (bool, String, String) {
    let out = venued(dir, &["audit", "verify"]);
    (out.status.success(), stdout(&out), stderr(&out))
}

#[tokio::test]
async fn a_long_log_verifies_with_sealed_segments() {
    let dir = tempfile::tempdir().unwrap();
    busy_store(dir.path()).await;
    let (ok, out, err) = verify(dir.path());
    assert!(ok, "{err}");
    // 1 boot + 1100 stations with their agent accounts (2 events each) + 1000 sessions,
    // plus the `clock_booted` this CLI run records: with no daemon running it opens the
    // store itself, and that is audited too.
    assert!(
        out.contains("3202 events") && out.contains("3 sealed segments"),
        "{out}"
    );
}

#[tokio::test]
async fn an_edited_event_is_named_as_the_first_broken_link() {
    let dir = tempfile::tempdir().unwrap();
    busy_store(dir.path()).await;
    tamper(dir.path(), |txn| {
        let mut t = txn.open_table(EVENTS).unwrap();
        // Past the 2,201 boot and station events: a session start.
        let mut raw = t.get(2600).unwrap().unwrap().value().to_vec();
        let body = String::from_utf8(raw.split_off(64)).unwrap();
        // Give the customer 10 hours instead of 10 minutes.
        let forged = body.replace("\"10m\"", "\"10h\"");
        assert_ne!(body, forged);
        raw.extend_from_slice(forged.as_bytes());
        t.insert(2600, raw.as_slice()).unwrap();
    });
    let (ok, _, err) = verify(dir.path());
    assert!(!ok);
    assert!(
        err.contains("BROKEN at event 2600") && err.contains("edited"),
        "{err}"
    );
}

#[tokio::test]
async fn a_deleted_event_or_a_forged_seal_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    busy_store(dir.path()).await;
    tamper(dir.path(), |txn| {
        txn.open_table(EVENTS).unwrap().remove(700).unwrap();
    });
    let (ok, _, err) = verify(dir.path());
    assert!(!ok);
    assert!(
        err.contains("BROKEN at event 701") && err.contains("missing"),
        "{err}"
    );

    let dir = tempfile::tempdir().unwrap();
    busy_store(dir.path()).await;
    tamper(dir.path(), |txn| {
        let mut t = txn.open_table(SEALS).unwrap();
        let raw = t.get(0).unwrap().unwrap().value().to_vec();
        let forged = String::from_utf8(raw)
            .unwrap()
            .replace("\"last_seq\":1024", "\"last_seq\":1023");
        t.insert(0, forged.as_bytes()).unwrap();
    });
    let (ok, _, err) = verify(dir.path());
    assert!(!ok);
    assert!(err.contains("BROKEN at seal 0"), "{err}");
}

#[tokio::test]
async fn pruning_a_sealed_segment_keeps_the_chain_verifiable() {
    let dir = tempfile::tempdir().unwrap();
    busy_store(dir.path()).await;
    // Retention drops the first sealed segment; its seal stays.
    tamper(dir.path(), |txn| {
        let mut t = txn.open_table(EVENTS).unwrap();
        for seq in 1..=1024 {
            t.remove(seq).unwrap();
        }
    });
    let (ok, out, err) = verify(dir.path());
    assert!(ok, "{err}");
    assert!(out.contains("(1025..3202)"), "{out}");
    // But pruning into the middle of a segment is not retention; it is a hole.
    tamper(dir.path(), |txn| {
        let mut t = txn.open_table(EVENTS).unwrap();
        t.remove(1025).unwrap();
    });
    let (ok, _, err) = verify(dir.path());
    assert!(!ok);
    assert!(err.contains("BROKEN at event 1026"), "{err}");
}
