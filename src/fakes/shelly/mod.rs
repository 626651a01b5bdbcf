//! Network fakes of Shelly smart plugs: a Plug S (Gen1) and a Plus Plug S (Gen2), each a
//! real HTTP server on 127.0.0.1 and, if configured, a real MQTT client of venued's broker.
//!
//! Why: venued switches game consoles through these plugs, and no plug is at hand where
//! it is built and tested. The fakes speak the firmware's wire formats (payloads start
//! from real device dumps in `fixtures/shelly/`), keep the state a plug keeps (output,
//! flip-back timers, auto-off, power drawn, energy, scripts, KVS) and can be told to
//! misbehave ([`Fault`]), so the controller's code is tested against peers, not mocks.
//!
//! Layout: `relay` (the relay and its timers, pure), `auth` (Basic, SHA-256 Digest, pure),
//! [`gen1`] and [`gen2`] (each a pure state struct answering HTTP and MQTT, plus the public
//! fake around it), `net` (the sockets, the timer task, the faults' I/O).
//!
//! Deviations from real firmware (also in the item docs):
//! - Gen1 `announce` goes to `shellies/<id>/announce`, not `shellies/announce`, and the
//!   fake does not listen on `shellies/command`: venued's broker lets a `device:` account
//!   use only its own topic roots.
//! - Gen2 replies go to `<src>/rpc` for any `src`, but only arrive when the device's
//!   account may publish there, i.e. when `src` lives under the device's prefix.
//! - One timer per relay: an explicit flip-back replaces a pending auto-off and the other
//!   way round.
//! - No CoIoT, no WebSocket RPC, no `Shelly.SetAuth`, no schedules or webhooks.
//!
//! Unverified on hardware, chosen here and easy to change: timer re-arm ([`ReArm`] offers
//! both), the `source` words for MQTT and the button (Gen1 `mqtt`/`button`, Gen2
//! `MQTT`/`button`; Gen2 HTTP is `HTTP_in` as seen in captures), error messages and the
//! HTTP status of `-103`/`-105` errors (400), the 429 body, and whether a re-sent
//! `Switch.Set` without a change emits a `NotifyStatus` (here: only when output or timer
//! changed).

mod auth;
pub mod gen1;
pub mod gen2;
mod net;
mod relay;

pub use gen1::{DefaultState, Gen1Config, ShellyGen1};
pub use gen2::{Gen2Config, InitialState, RpcError, ScriptInfo, ShellyGen2};
pub use net::MqttConfig;

use crate::clock::{Clock, SystemClock, TrustMode};
use std::time::Duration;

/// How a fake misbehaves, switched at any time with `set_fault`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Fault {
    #[default]
    None,
    /// Off the network (timers keep running on the device): the HTTP port refuses
    /// connections and open ones are closed, the MQTT connection drops without a
    /// DISCONNECT so the broker publishes the will (`online` = `false`). Back to another
    /// mode: it listens on the same port again, reconnects and publishes `online` = `true`.
    Offline,
    /// Every HTTP request and MQTT command waits this long before it is handled.
    Slow(Duration),
    /// Rate limited, as Gen2 firmware 2.x does: every HTTP request is answered 429 and
    /// not executed; Gen2 MQTT RPC answers error 429, Gen2 command topics are ignored.
    TooManyRequests,
    /// The request is executed, but the answer is a 200 whose body is not valid JSON
    /// (HTTP, Gen2 MQTT RPC replies, Gen1 `announce`); spontaneous reports stay valid.
    WrongAnswers,
}

/// Re-sending `turn=on&timer=N` (Gen1) or `Switch.Set on=true toggle_after=N` (Gen2) to
/// an output that is already on with a timer running. Real firmware's choice is
/// unverified, so the fakes offer both.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReArm {
    /// The timer starts again from now (`timer_started_at` moves).
    #[default]
    Restarts,
    /// The first timer keeps running (`timer_started_at` does not move).
    Ignored,
}

/// Unix seconds now, from `clock` or the system clock; the fakes read the wall clock
/// once and then follow tokio time.
fn wall_start(clock: Option<&dyn Clock>) -> f64 {
    let ms = match clock {
        Some(c) => c.wall().as_millisecond(),
        None => SystemClock::new(TrustMode::Always).wall().as_millisecond(),
    };
    ms as f64 / 1000.0
}
