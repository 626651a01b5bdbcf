//! `GET /api/v1/stream`: every committed event, live, as Server-Sent Events.
//!
//! Each SSE event is one event of the log: `id:` its `seq`, `event:` its `type`, `data:`
//! the event JSON exactly as `/api/v1/events` returns it. A client resumes with the
//! `Last-Event-ID` header (browsers send it on reconnect) or `?after=N`: the events after
//! that seq are replayed from the store, then the stream continues live.
//!
//! No gap, no duplicate: the stream subscribes to the engine's broadcast *before* reading
//! the store, so an event committed meanwhile is in one or both; live events at or below
//! the last seq sent are skipped, and a live event beyond the next expected seq (or a
//! lagging subscription) is filled in from the store first.
//!
//! Alerts: the engine produces none yet. Once it records them as log events they
//! appear here under their own `event:` type with no change to this module.

use super::AppState;
use super::api::blocking;
use super::error::ApiError;
use crate::engine::Engine;
use crate::store::{Event, Store, StoreError};
use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{self, KeepAlive, Sse};
use axum::routing::get;
use redb::{ReadableDatabase, ReadableTable};
use serde::Deserialize;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast, mpsc, watch};

/// Streams open at once per router; one more is `503 too_many_streams`.
pub const MAX_STREAMS: usize = 64;
/// A comment line is sent after this much silence, so proxies and clients keep the
/// connection and notice a dead one.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// The header a reconnecting `EventSource` sends.
pub const LAST_EVENT_ID: &str = "last-event-id";
/// Events read from the store per read transaction while replaying.
const REPLAY_PAGE: usize = 500;
/// Events formatted ahead of a slow client; beyond this the pump waits for it.
const BUFFER: usize = 32;

pub fn routes() -> Router<AppState> {
    let slots = Arc::new(Semaphore::new(MAX_STREAMS));
    Router::new().route(
        "/api/v1/stream",
        get(
            move |State(state): State<AppState>,
                  headers: HeaderMap,
                  query: Result<Query<StreamQuery>, QueryRejection>| {
                let slots = slots.clone();
                async move { open(state, headers, query, slots).await }
            },
        ),
    )
}

/// Ends every stream open now, so a graceful shutdown is not held up by them (streams
/// never finish on their own). Clients reconnect with `Last-Event-ID` and lose nothing.
pub fn close_all() {
    CLOSING.send_modify(|generation| *generation = generation.wrapping_add(1));
}

/// `shutdown`, then [`close_all`]: pass this to `with_graceful_shutdown`.
pub async fn closing(shutdown: impl Future<Output = ()>) {
    shutdown.await;
    close_all();
}

static CLOSING: LazyLock<watch::Sender<u64>> = LazyLock::new(|| watch::channel(0).0);

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct StreamQuery {
    /// For clients that cannot set headers: resume after this seq (`Last-Event-ID` wins
    /// when both are sent).
    #[serde(default)]
    #[schemars(pattern(r"^[0-9]{1,20}$"))]
    after: Option<String>,
}

async fn open(
    state: AppState,
    headers: HeaderMap,
    query: Result<Query<StreamQuery>, QueryRejection>,
    slots: Arc<Semaphore>,
) -> Result<Sse<impl futures_core::Stream<Item = Result<sse::Event, Infallible>>>, ApiError> {
    let resume = resume_point(&headers, query)?;
    let slot = slots.try_acquire_owned().map_err(|_| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_streams",
            format!("at most {MAX_STREAMS} live streams may be open at once; retry later"),
        )
    })?;
    let engine = state.engine;
    // Subscribe first: whatever commits from here on is in the broadcast.
    let live = engine.subscribe();
    let store = engine.store()?;
    let head = blocking(move || head_seq(&store)).await?;
    // An id ahead of the log (a store restored from a backup) resumes from its end.
    let start = resume.map_or(head, |after| after.min(head));
    let (tx, rx) = mpsc::channel(BUFFER);
    let pump = Pump {
        engine,
        tx,
        closing: CLOSING.subscribe(),
        last: start,
    };
    tokio::spawn(pump.run(live));
    let events = EventStream { rx, _slot: slot };
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE).text("keep-alive")))
}

/// The seq to resume after: `Last-Event-ID` if sent, else `?after=`, else none (live only).
fn resume_point(
    headers: &HeaderMap,
    query: Result<Query<StreamQuery>, QueryRejection>,
) -> Result<Option<u64>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::invalid("invalid_query", e.body_text()))?;
    if let Some(value) = headers.get(LAST_EVENT_ID) {
        let raw = value
            .to_str()
            .map_err(|_| bad_id("Last-Event-ID must be an event seq (digits)"))?;
        return parse_seq(raw, "Last-Event-ID").map(Some);
    }
    query
        .after
        .as_deref()
        .map(|raw| parse_seq(raw, "after"))
        .transpose()
}

fn parse_seq(raw: &str, what: &str) -> Result<u64, ApiError> {
    let raw = raw.trim();
    if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad_id(format!(
            "{what} must be the seq of an event (digits), got {:?}",
            raw.chars().take(40).collect::<String>()
        )));
    }
    raw.parse()
        .map_err(|_| bad_id(format!("{what} is out of range")))
}

fn bad_id(detail: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_last_event_id", detail)
}

/// The body: what the pump formatted, in order. Holding the slot here frees it the
/// moment the client goes away.
struct EventStream {
    rx: mpsc::Receiver<sse::Event>,
    _slot: OwnedSemaphorePermit,
}

impl futures_core::Stream for EventStream {
    type Item = Result<sse::Event, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx).map(|event| event.map(Ok))
    }
}

/// Why a pump stopped; every case ends the response, and the client may reconnect.
#[derive(Debug)]
enum End {
    ClientGone,
    Closing,
    EngineStopped,
    Store(ApiError),
}

/// Moves events from the store and the broadcast into one stream's buffer.
struct Pump {
    engine: Engine,
    tx: mpsc::Sender<sse::Event>,
    closing: watch::Receiver<u64>,
    /// The last seq sent (or the starting point).
    last: u64,
}

impl Pump {
    async fn run(mut self, live: broadcast::Receiver<Arc<Event>>) {
        match self.pump(live).await {
            Err(End::ClientGone | End::Closing | End::EngineStopped) | Ok(()) => {}
            Err(End::Store(e)) => tracing::warn!(
                last = self.last,
                error = %e.detail,
                "event stream ended: the store could not be read; the client will resume"
            ),
        }
    }

    async fn pump(&mut self, mut live: broadcast::Receiver<Arc<Event>>) -> Result<(), End> {
        self.replay().await?;
        loop {
            let received = tokio::select! {
                () = self.tx.closed() => return Err(End::ClientGone),
                _ = self.closing.changed() => return Err(End::Closing),
                received = live.recv() => received,
            };
            match received {
                Ok(event) if event.seq <= self.last => {} // already sent from the store
                Ok(event) => {
                    if event.seq > self.last + 1 {
                        // Missing seqs (e.g. a commit that landed although it reported
                        // failure, so it was never broadcast): the store has them.
                        self.replay().await?;
                    }
                    if event.seq > self.last {
                        self.send(&event).await?;
                    }
                }
                Err(RecvError::Lagged(skipped)) => {
                    tracing::debug!(skipped, last = self.last, "event stream lagged; replaying");
                    self.replay().await?;
                }
                Err(RecvError::Closed) => return Err(End::EngineStopped),
            }
        }
    }

    /// Send every stored event after `last`, page by page, off the async workers.
    async fn replay(&mut self) -> Result<(), End> {
        loop {
            let store = self.engine.store().map_err(|e| End::Store(e.into()))?;
            let after = self.last;
            let page = blocking(move || store.events(after, REPLAY_PAGE))
                .await
                .map_err(End::Store)?;
            let full = page.len() == REPLAY_PAGE;
            for event in &page {
                self.send(event).await?;
            }
            if !full {
                return Ok(());
            }
        }
    }

    async fn send(&mut self, event: &Event) -> Result<(), End> {
        let frame = frame(event).map_err(|e| {
            End::Store(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                format!("event {} could not be encoded: {e}", event.seq),
            ))
        })?;
        tokio::select! {
            sent = self.tx.send(frame) => sent.map_err(|_| End::ClientGone)?,
            _ = self.closing.changed() => return Err(End::Closing),
        }
        self.last = event.seq;
        Ok(())
    }
}

/// One log event as one SSE event.
fn frame(event: &Event) -> Result<sse::Event, serde_json::Error> {
    /// The event's `type`, read back from its JSON so new event kinds need no change here.
    #[derive(Deserialize)]
    struct Tag {
        #[serde(rename = "type")]
        kind: String,
    }
    let data = serde_json::to_string(event)?;
    let tag: Tag = serde_json::from_str(&data)?;
    Ok(sse::Event::default()
        .id(event.seq.to_string())
        .event(tag.kind)
        .data(data))
}

/// The seq of the newest event in the log (0 when empty).
fn head_seq(store: &Store) -> Result<u64, StoreError> {
    let txn = store.db().begin_read()?;
    let table = txn.open_table(crate::store::tables::EVENTS)?;
    Ok(table.last()?.map_or(0, |(seq, _)| seq.value()))
}
