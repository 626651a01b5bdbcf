//! The JSON API. One router serves the control socket now (its file permissions stand
//! in for login) and the network listeners once accounts and TLS land, so there is one
//! API and no second command protocol.

mod api;

/// Response types of the API, for clients (the CLI, tests).
pub mod api_types {
    pub use super::api::{
        ClockView, CommandResult, EventPage, Readiness, SessionView, StationView,
    };
}
mod error;
mod extract;

pub use error::{ApiError, Problem};
pub use extract::Caller;

use crate::domain::Actor;
use crate::engine::Engine;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::extract::connect_info::{ConnectInfo, Connected};
use axum::serve::IncomingStream;
use std::future::Future;
use tokio::net::UnixListener;

/// Largest request body accepted; commands are small.
pub const MAX_BODY: usize = 64 * 1024;

#[derive(Clone, Debug)]
pub struct AppState {
    pub engine: Engine,
}

/// The whole API, without transport concerns: callers insert a [`Caller`] extension.
pub fn router(engine: Engine) -> Router {
    api::routes()
        .merge(api::ops_routes())
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(AppState { engine })
}

/// Only the liveness and readiness probes, for network listeners until the API has
/// accounts and TLS.
pub fn ops_router(engine: Engine) -> Router {
    api::ops_routes().with_state(AppState { engine })
}

/// The Unix peer's uid, recorded as the actor of socket requests.
#[derive(Clone, Debug)]
struct UnixPeer {
    uid: Option<u32>,
}

impl Connected<IncomingStream<'_, UnixListener>> for UnixPeer {
    fn connect_info(stream: IncomingStream<'_, UnixListener>) -> Self {
        Self {
            uid: stream.io().peer_cred().ok().map(|c| c.uid()),
        }
    }
}

/// Serve the API on the control socket until `shutdown` resolves; in-flight requests
/// finish first.
pub async fn serve_socket(
    listener: UnixListener,
    engine: Engine,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(engine).layer(axum::middleware::from_fn(
        |ConnectInfo(peer): ConnectInfo<UnixPeer>,
         mut req: axum::extract::Request,
         next: axum::middleware::Next| async move {
            req.extensions_mut()
                .insert(Caller(Actor::Local { uid: peer.uid }));
            next.run(req).await
        },
    ));
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<UnixPeer>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

/// Serve the probes on a TCP listener.
pub async fn serve_tcp(
    listener: tokio::net::TcpListener,
    engine: Engine,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, ops_router(engine))
        .with_graceful_shutdown(shutdown)
        .await
}
