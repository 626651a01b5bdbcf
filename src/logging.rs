//! Logs: readable text on a terminal, JSON lines otherwise (journald, files).

use crate::config::LogFormat;
use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

/// Install the global subscriber. `VENUED_LOG` (already folded into `level` by the config)
/// wins over the file; a bad filter was refused by config validation.
pub fn init(level: &str, format: LogFormat) {
    let filter =
        EnvFilter::try_new(with_quiet_router(level)).unwrap_or_else(|_| EnvFilter::new("info"));
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second init (tests, CLI direct mode) keeps the first subscriber.
    let _ = if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init()
    } else {
        builder.with_target(false).try_init()
    };
}

/// rumqttd logs every connection and subscription at info (and its router's view of a
/// client is our internal id): one line per event is ours to write. Its warnings and
/// errors still show, and naming `rumqttd` in the filter restores the rest.
fn with_quiet_router(level: &str) -> String {
    if level.contains("rumqttd") {
        level.to_owned()
    } else {
        format!("{level},rumqttd=warn")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_router_is_quiet_unless_asked_for() {
        assert_eq!(super::with_quiet_router("info"), "info,rumqttd=warn");
        assert_eq!(super::with_quiet_router("rumqttd=debug"), "rumqttd=debug");
    }
}
