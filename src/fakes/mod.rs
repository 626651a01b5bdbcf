//! Network fakes of the devices venued drives: Shelly Gen1 and Gen2 plugs, Tasmota plugs
//! and the MikroTik RouterOS REST API.
//!
//! There is no real plug or router here, so these are real peers on loopback instead:
//! HTTP servers and MQTT clients (to venued's own broker) that answer with the payload
//! shapes of real firmware (the fixtures under src/fakes/fixtures/, copied with their
//! attribution from real devices, and the vendors' API documentation), keep the state a device keeps (relay,
//! timers, power draw, address lists) and can be told to misbehave (offline, slow, 429,
//! wrong answers, a local button press, power drawn). The integration tests and `venued
//! simulate` drive venued against them. They are in the default build; an appliance build
//! leaves them out with `--no-default-features --features controller,agent`.

pub mod mikrotik;
pub mod shelly;
pub mod tasmota;
