//! venued: the edge controller of a gaming venue. See README.md and docs/.

pub mod agent;
pub mod clock;
pub mod config;
#[cfg(any(feature = "controller", feature = "agent"))]
pub mod discovery;
pub mod domain;
#[cfg(feature = "fakes")]
pub mod fakes;

#[cfg(feature = "controller")]
pub mod auth;
#[cfg(feature = "controller")]
pub mod broker;
#[cfg(feature = "controller")]
pub mod cli;
#[cfg(feature = "controller")]
pub mod devices;
#[cfg(feature = "controller")]
pub mod enforce;
#[cfg(feature = "controller")]
pub mod engine;
#[cfg(feature = "controller")]
pub mod http;
pub mod logging;
pub mod protocol;
pub mod runtime;
#[cfg(feature = "controller")]
pub mod store;
#[cfg(feature = "controller")]
pub mod tls;
