//! The one integration-test binary: every surface, through its public interface.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

mod agent;
mod audit;
mod bad_input;
mod cli_flow;
mod clock_trust;
mod config_fixtures;
mod consoles;
mod crash;
mod device_fakes_mikrotik_tasmota;
mod device_fakes_shelly;
mod device_mqtt;
mod devices;
mod discovery;
mod firmware;
mod mikrotik;
mod mqtt;
mod mqtt_clients;
mod network_api;
mod openapi;
mod overlay;
mod plugs;
mod power_cut;
mod protocol;
mod provision;
mod scheduler;
mod stream_metrics;
mod tls;
