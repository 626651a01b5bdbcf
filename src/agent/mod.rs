//! The PC agent (`venued agent`): the customer's view of the session and the venue's
//! guarantee that time is enforced, even offline.
//!
//! [`enforcer`] is the pure core: it turns retained station states, commands and the
//! passing of time into lock, unlock, warn and acknowledge actions. The MQTT client, the OS
//! adapters and the overlay build on it.

pub mod enforcer;
pub mod overlay;

#[cfg(feature = "agent")]
pub mod adapter;
#[cfg(feature = "agent")]
pub mod cli;
#[cfg(feature = "agent")]
pub mod enroll;
#[cfg(feature = "agent")]
pub mod run;
#[cfg(feature = "agent")]
pub mod service;
#[cfg(feature = "agent")]
pub mod status;
#[cfg(all(feature = "agent", windows))]
pub mod windows;
