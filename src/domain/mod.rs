//! Pure venue logic: no I/O, no tokio, no clock reads. Functions of (state, command, now).

pub mod account;
pub mod acl;
pub mod actor;
pub mod command;
pub mod device;
pub mod enforcement;
pub mod error;
pub mod ids;
pub mod ladder;
pub mod mqtt;
pub mod session;
pub mod station;
pub mod time;
pub mod timekeeping;
pub mod venue;

#[cfg(test)]
mod proptests;

pub use account::Role;
pub use actor::Actor;
pub use command::Command;
pub use error::DomainError;
pub use ids::{SessionId, StationId};
pub use session::{EndReason, Phase, Session, SessionChange, SessionPolicy};
pub use station::{Station, StationKind};
pub use venue::{EventKind, VenueState};
