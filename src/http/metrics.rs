//! `GET /metrics`: Prometheus text exposition format 0.0.4, written by hand.
//!
//! Engine figures come from [`EngineStats`](crate::engine::EngineStats) and the snapshot;
//! HTTP figures from the [`layer`] the router wraps every route in, which labels requests
//! by their route *template* (`/api/v1/sessions/{id}`), never the raw path, so the number
//! of series stays bounded whatever clients send. See docs/api.md for every metric.

use super::AppState;
use crate::engine::Engine;
use crate::engine::stats::{Histogram, HistogramSnapshot};
use axum::Router;
use axum::extract::{Extension, MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// The content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// The `route` label of requests that matched no route (404s of unknown paths).
pub const UNMATCHED: &str = "unmatched";

pub fn routes() -> Router<AppState> {
    Router::new().route("/metrics", get(scrape))
}

/// Count an authentication or authorisation failure. `reason` is one of
/// [`auth_failure_reasons`]; anything else is counted as `unauthenticated`, so the label
/// set stays fixed.
pub fn record_auth_failure(reason: &str) {
    super::metrics_hook::auth_failure(reason);
}

/// The fixed set of `reason` labels of `venued_auth_failures_total`.
pub fn auth_failure_reasons() -> &'static [&'static str] {
    &super::metrics_hook::REASONS
}

// ---- the HTTP middleware ----

/// Counts and times every request. Apply to the whole router with `.layer(layer())`;
/// `/metrics` of the same router then reports what it counted.
pub fn layer() -> MetricsLayer {
    MetricsLayer::default()
}

#[derive(Clone, Debug, Default)]
pub struct MetricsLayer {
    metrics: Arc<HttpMetrics>,
}

impl<S> tower::Layer<S> for MetricsLayer {
    type Service = Track<S>;

    fn layer(&self, inner: S) -> Track<S> {
        Track {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// The service [`MetricsLayer`] wraps each route in.
#[derive(Clone, Debug)]
pub struct Track<S> {
    inner: S,
    metrics: Arc<HttpMetrics>,
}

impl<S> tower::Service<Request> for Track<S>
where
    S: tower::Service<Request, Response = Response> + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        let route = req
            .extensions()
            .get::<MatchedPath>()
            .map(|p| p.as_str().to_owned());
        req.extensions_mut().insert(self.metrics.clone());
        let metrics = self.metrics.clone();
        let started = Instant::now();
        let response = self.inner.call(req);
        Box::pin(async move {
            let response = response.await?;
            // Until the response head: for the event stream, the time to open it.
            metrics.record(
                route.as_deref().unwrap_or(UNMATCHED),
                response.status(),
                started.elapsed(),
            );
            Ok(response)
        })
    }
}

/// Requests by route template and status, and their latency by route.
#[derive(Debug, Default)]
pub struct HttpMetrics {
    routes: RwLock<BTreeMap<String, RouteMetrics>>,
}

#[derive(Debug)]
struct RouteMetrics {
    duration: Histogram,
    statuses: Mutex<BTreeMap<u16, u64>>,
}

impl RouteMetrics {
    fn record(&self, status: StatusCode, elapsed: Duration) {
        self.duration.observe(elapsed);
        *self
            .statuses
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(status.as_u16())
            .or_default() += 1;
    }
}

impl HttpMetrics {
    fn record(&self, route: &str, status: StatusCode, elapsed: Duration) {
        if let Some(m) = self
            .routes
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(route)
        {
            m.record(status, elapsed);
            return;
        }
        self.routes
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(route.to_owned())
            .or_insert_with(|| RouteMetrics {
                duration: Histogram::latency(),
                statuses: Mutex::new(BTreeMap::new()),
            })
            .record(status, elapsed);
    }

    /// Every route seen, in order.
    fn read(&self) -> Vec<RouteReading> {
        self.routes
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(route, m)| {
                let statuses = m
                    .statuses
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .iter()
                    .map(|(s, n)| (*s, *n))
                    .collect();
                RouteReading {
                    route: route.clone(),
                    statuses,
                    latency: m.duration.snapshot(),
                }
            })
            .collect()
    }
}

/// One route's figures at scrape time.
struct RouteReading {
    route: String,
    /// (status, requests), ascending.
    statuses: Vec<(u16, u64)>,
    latency: HistogramSnapshot,
}

// ---- the scrape ----

async fn scrape(
    State(state): State<AppState>,
    http: Option<Extension<Arc<HttpMetrics>>>,
) -> Response {
    let body = render(&state.engine, http.as_ref().map(|Extension(m)| m.as_ref()));
    let mut response = body.into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    response
}

/// The whole exposition. Every family is always present (zeros included), so rates and
/// alerts work from the first scrape.
pub fn render(engine: &Engine, http: Option<&HttpMetrics>) -> String {
    let stats = engine.stats();
    let snap = engine.snapshot();
    let mut out = Exposition::default();

    out.family(
        "venued_build_info",
        "gauge",
        "Always 1; the version of the running venued in its label.",
    );
    out.sample(
        "venued_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1,
    );
    out.family(
        "venued_stations",
        "gauge",
        "Stations configured, as of the last commit.",
    );
    out.sample("venued_stations", &[], snap.state.stations.len());
    out.family(
        "venued_sessions_active",
        "gauge",
        "Sessions not ended (running, paused or in grace), as of the last commit.",
    );
    out.sample("venued_sessions_active", &[], snap.state.sessions.len());
    out.family(
        "venued_clock_trusted",
        "gauge",
        "1 when a trusted source vouches for the venue clock, 0 while it counts from a checkpoint.",
    );
    out.sample(
        "venued_clock_trusted",
        &[],
        u8::from(snap.clock.trusted.is_some()),
    );

    out.family(
        "venued_commands_total",
        "counter",
        "Commands by final outcome: committed, replayed (idempotent retry), refused (4xx), failed (storage), busy (not queued).",
    );
    for (outcome, n) in stats.commands_by_outcome() {
        out.sample("venued_commands_total", &[("outcome", outcome.as_str())], n);
    }
    out.family(
        "venued_commits_total",
        "counter",
        "Write transactions committed (one per group commit, however many commands it holds).",
    );
    out.sample(
        "venued_commits_total",
        &[],
        stats.commits.load(Ordering::Relaxed),
    );
    out.family(
        "venued_commit_failures_total",
        "counter",
        "Write transactions that failed; their commands were not acknowledged.",
    );
    out.sample(
        "venued_commit_failures_total",
        &[],
        stats.failed_commits.load(Ordering::Relaxed),
    );
    out.family(
        "venued_commit_duration_seconds",
        "histogram",
        "Time of each committed write transaction, fsync included.",
    );
    out.histogram(
        "venued_commit_duration_seconds",
        &[],
        &stats.commit_duration.snapshot(),
    );
    out.family(
        "venued_command_queue_depth",
        "gauge",
        "Commands waiting for the writer thread.",
    );
    out.sample("venued_command_queue_depth", &[], stats.queue_depth());

    let routes = http.map(HttpMetrics::read).unwrap_or_default();
    out.family(
        "venued_http_requests_total",
        "counter",
        "HTTP requests answered, by route template and status.",
    );
    for r in &routes {
        for (status, n) in &r.statuses {
            out.sample(
                "venued_http_requests_total",
                &[("route", &r.route), ("status", &status.to_string())],
                n,
            );
        }
    }
    out.family(
        "venued_http_request_duration_seconds",
        "histogram",
        "Time to answer HTTP requests (until the response head), by route template.",
    );
    for r in &routes {
        out.histogram(
            "venued_http_request_duration_seconds",
            &[("route", &r.route)],
            &r.latency,
        );
    }

    out.family(
        "venued_auth_failures_total",
        "counter",
        "Refused authentications and authorisations, by reason.",
    );
    for (reason, n) in super::metrics_hook::auth_failures() {
        out.sample("venued_auth_failures_total", &[("reason", reason)], n);
    }
    out.family(
        "venued_device_actions_total",
        "counter",
        "Actions the reconciler ran on console stations' devices, by action and outcome.",
    );
    for (action, outcome, n) in crate::enforce::metrics::actions() {
        out.sample(
            "venued_device_actions_total",
            &[("action", action), ("outcome", outcome)],
            n,
        );
    }
    out.family(
        "venued_enforcement_alerts_total",
        "counter",
        "Tamper, bypass and device alerts on console stations, by kind.",
    );
    for (kind, n) in crate::enforce::metrics::alerts() {
        out.sample("venued_enforcement_alerts_total", &[("kind", kind)], n);
    }
    if let Some(mqtt) = crate::broker::metrics::global() {
        mqtt.render(&mut out.0, crate::broker::metrics::rss_bytes());
    }
    out.0
}

/// A text exposition being written.
#[derive(Default)]
struct Exposition(String);

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.0.push_str(name);
        self.labels(labels, None);
        let _ = writeln!(self.0, " {value}");
    }

    fn labels(&mut self, labels: &[(&str, &str)], le: Option<&str>) {
        let extra = le.map(|le| ("le", le));
        let mut all = labels.iter().copied().chain(extra).peekable();
        if all.peek().is_none() {
            return;
        }
        self.0.push('{');
        for (i, (k, v)) in all.enumerate() {
            if i > 0 {
                self.0.push(',');
            }
            let _ = write!(self.0, "{k}=\"{}\"", escape_label(v));
        }
        self.0.push('}');
    }

    fn histogram(&mut self, name: &str, labels: &[(&str, &str)], h: &HistogramSnapshot) {
        let bucket = format!("{name}_bucket");
        for (le, n) in &h.buckets {
            self.0.push_str(&bucket);
            self.labels(labels, Some(&le.to_string()));
            let _ = writeln!(self.0, " {n}");
        }
        self.0.push_str(&bucket);
        self.labels(labels, Some("+Inf"));
        let _ = writeln!(self.0, " {}", h.count);
        self.sample(&format!("{name}_sum"), labels, h.sum_seconds);
        self.sample(&format!("{name}_count"), labels, h.count);
    }
}

fn escape_label(v: &str) -> String {
    v.replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}

fn escape_help(v: &str) -> String {
    v.replace('\\', r"\\").replace('\n', r"\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_escaped_and_histograms_end_with_inf_sum_count() {
        let mut out = Exposition::default();
        out.sample("m", &[("route", "a\"b\\c\nd")], 1);
        let h = Histogram::new(&[0.5]);
        h.observe(Duration::from_millis(100));
        h.observe(Duration::from_secs(1));
        out.histogram("h", &[("route", "/x")], &h.snapshot());
        assert_eq!(
            out.0,
            "m{route=\"a\\\"b\\\\c\\nd\"} 1\n\
             h_bucket{route=\"/x\",le=\"0.5\"} 1\n\
             h_bucket{route=\"/x\",le=\"+Inf\"} 2\n\
             h_sum{route=\"/x\"} 1.1\n\
             h_count{route=\"/x\"} 2\n"
        );
    }
}
