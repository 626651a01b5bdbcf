//! Drivers of the devices that enforce console stations: Shelly and Tasmota plugs, the
//! MikroTik router. Each speaks its device's own API (docs/devices.md; tested
//! against the network fakes in `src/fakes`). They never block the engine: the
//! reconciler calls them from its own tasks.

pub mod failsafe;
pub mod http;
pub mod mikrotik;
pub mod mqtt;
pub mod plug;
pub mod provision;

use std::time::Duration;

/// Why a device call failed, in words an operator can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceError {
    #[error("cannot reach {0}")]
    Unreachable(String),
    #[error("{0} did not answer within {1:?}")]
    Timeout(String, Duration),
    #[error("{0} refused the credentials (check the device's password)")]
    Auth(String),
    #[error("{0} is rate-limiting (429); backing off")]
    TooManyRequests(String),
    #[error("{device} answered {status}: {detail}")]
    Refused {
        device: String,
        status: u16,
        detail: String,
    },
    #[error("{0} answered something unexpected: {1}")]
    Malformed(String, String),
    #[error("invalid device configuration: {0}")]
    Config(String),
}
