use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "the data directory {0} is in use by another venued process (redb holds a lock on its store); stop it first or talk to it through its control socket"
    )]
    AlreadyOpen(PathBuf),
    #[error(
        "the store was written by a newer venued (schema v{found}); this binary knows up to v{known}. Install the newer version or restore a backup"
    )]
    NewerSchema { found: u32, known: u32 },
    #[error("the store is corrupt: {0}")]
    Corrupt(String),
    #[error("storage I/O failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("storage failed: {0}")]
    Redb(#[from] redb::Error),
}

impl StoreError {
    /// True when the disk (or the test backend) reports it is full.
    pub fn is_disk_full(&self) -> bool {
        match self {
            StoreError::Io(e) => e.kind() == std::io::ErrorKind::StorageFull,
            StoreError::Redb(redb::Error::Io(e)) => e.kind() == std::io::ErrorKind::StorageFull,
            _ => false,
        }
    }
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Redb(redb::Error::from(e))
            }
        }
    )*};
}
from_redb!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

impl From<serde_json::Error> for StoreError {
    fn from(e: serde_json::Error) -> Self {
        StoreError::Corrupt(format!("undecodable record: {e}"))
    }
}
