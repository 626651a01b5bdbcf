//! Counters the MQTT front keeps, rendered into `/metrics` (Prometheus text format).

use super::auth::{Kind, Refusal};
use crate::domain::StationId;
use std::collections::BTreeSet;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};

/// The running broker's counters, for `/metrics` (one broker per process).
static GLOBAL: OnceLock<Arc<BrokerMetrics>> = OnceLock::new();

pub fn install(metrics: Arc<BrokerMetrics>) {
    let _ = GLOBAL.set(metrics);
}

pub fn global() -> Option<&'static BrokerMetrics> {
    GLOBAL.get().map(Arc::as_ref)
}

/// Resident memory of this process (Linux `/proc/self/status`), in bytes.
pub fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[derive(Debug, Default)]
pub struct BrokerMetrics {
    connected: [AtomicI64; 4],
    pub messages_in: AtomicU64,
    pub messages_out: AtomicU64,
    pub publish_denied: AtomicU64,
    pub subscribe_denied: AtomicU64,
    auth_failures: [AtomicU64; 5],
    pub oversize: AtomicU64,
    pub throttled: AtomicU64,
    pub protocol_errors: AtomicU64,
    /// Bytes held in the front's per-connection buffers right now.
    pub buffer_bytes: AtomicI64,
    /// PC stations whose agent left a command unanswered through every retry (cleared
    /// by its next acknowledgement or `online` status).
    pub unhealthy_agents: Arc<Mutex<BTreeSet<StationId>>>,
}

fn slot(kind: Kind) -> usize {
    match kind {
        Kind::Agent => 0,
        Kind::Device => 1,
        Kind::Integration => 2,
        Kind::Staff => 3,
    }
}

impl BrokerMetrics {
    pub fn connected(&self, kind: Kind, delta: i64) {
        self.connected[slot(kind)].fetch_add(delta, Relaxed);
    }

    pub fn connections(&self) -> i64 {
        self.connected.iter().map(|c| c.load(Relaxed)).sum()
    }

    pub fn auth_failure(&self, refusal: Refusal) {
        self.auth_failures[refusal as usize - 1].fetch_add(1, Relaxed);
    }

    /// Append the Prometheus exposition of these counters to `out`.
    pub fn render(&self, out: &mut String, rss_bytes: Option<u64>) {
        let mut metric = |name: &str, help: &str, kind: &str, lines: &[(String, i64)]| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, v) in lines {
                let _ = writeln!(out, "{name}{labels} {v}");
            }
        };
        let one = |v: u64| vec![(String::new(), v as i64)];
        metric(
            "venued_mqtt_connections",
            "Open MQTT client connections by account kind.",
            "gauge",
            &Kind::ALL
                .iter()
                .map(|k| {
                    (
                        format!("{{kind=\"{}\"}}", k.as_str()),
                        self.connected[slot(*k)].load(Relaxed),
                    )
                })
                .collect::<Vec<_>>(),
        );
        metric(
            "venued_mqtt_messages_in_total",
            "PUBLISH packets received from clients.",
            "counter",
            &one(self.messages_in.load(Relaxed)),
        );
        metric(
            "venued_mqtt_messages_out_total",
            "PUBLISH packets sent to clients.",
            "counter",
            &one(self.messages_out.load(Relaxed)),
        );
        metric(
            "venued_mqtt_acl_denied_total",
            "Client operations refused by the topic ACL.",
            "counter",
            &[
                (
                    "{op=\"publish\"}".into(),
                    self.publish_denied.load(Relaxed) as i64,
                ),
                (
                    "{op=\"subscribe\"}".into(),
                    self.subscribe_denied.load(Relaxed) as i64,
                ),
            ],
        );
        let reasons = [
            "protocol",
            "client_id",
            "unavailable",
            "bad_credentials",
            "not_authorised",
        ];
        metric(
            "venued_mqtt_connect_refused_total",
            "CONNECTs refused, by CONNACK reason.",
            "counter",
            &reasons
                .iter()
                .zip(&self.auth_failures)
                .map(|(r, c)| (format!("{{reason=\"{r}\"}}"), c.load(Relaxed) as i64))
                .collect::<Vec<_>>(),
        );
        metric(
            "venued_mqtt_oversize_total",
            "Clients disconnected for a packet over mqtt.max-packet-size.",
            "counter",
            &one(self.oversize.load(Relaxed)),
        );
        metric(
            "venued_mqtt_throttled_total",
            "Times a client was slowed down by mqtt.publish-rate.",
            "counter",
            &one(self.throttled.load(Relaxed)),
        );
        metric(
            "venued_mqtt_protocol_errors_total",
            "Clients disconnected for malformed packets or protocol violations.",
            "counter",
            &one(self.protocol_errors.load(Relaxed)),
        );
        let unhealthy = self
            .unhealthy_agents
            .lock()
            .map(|s| s.len() as i64)
            .unwrap_or(0);
        metric(
            "venued_mqtt_agents_unhealthy",
            "PC agents that left a command unacknowledged through every retry.",
            "gauge",
            &[(String::new(), unhealthy)],
        );
        let buffers = self.buffer_bytes.load(Relaxed);
        metric(
            "venued_mqtt_front_buffer_bytes",
            "Bytes held in the MQTT front's connection buffers.",
            "gauge",
            &[(String::new(), buffers)],
        );
        // An estimate, not an accounting: process memory over open connections. It
        // overstates with few connections (the baseline dominates); at hundreds it is a
        // fair per-connection figure (docs/benchmarks.md has measured ones).
        let conns = self.connections();
        if let (Some(rss), true) = (rss_bytes, conns > 0) {
            metric(
                "venued_mqtt_bytes_per_connection_estimate",
                "Process RSS divided by open MQTT connections (upper bound).",
                "gauge",
                &[(String::new(), rss as i64 / conns)],
            );
        }
    }
}
