//! The lock screen and the countdown overlay.
//!
//! A Windows service cannot draw on the customer's desktop, and a Linux agent running as
//! root should not be an X client, so the agent starts a small helper (`venued agent
//! overlay`) in the user's session and talks to it over a loopback link ([`ipc`]):
//! the agent decides what the screen shows ([`screen`]), the helper draws it
//! ([`render`]) and sends back what the customer types on the lock page.

pub mod screen;

#[cfg(feature = "agent")]
pub mod helper;
#[cfg(feature = "agent")]
pub mod ipc;
#[cfg(feature = "agent")]
pub mod link;
#[cfg(feature = "agent")]
pub mod render;
#[cfg(all(feature = "agent", unix))]
pub mod x11;
