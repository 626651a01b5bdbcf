//! The JSON API. One router serves the control socket now (its file permissions stand
//! in for login) and the network listeners once accounts and TLS land, so there is one
//! API and no second command protocol.

mod api;
pub mod auth;
mod authz;
pub mod ca_page;
pub mod devices;
pub mod enrollment;
pub mod metrics;
pub mod metrics_hook;
pub mod mqtt_accounts;
pub mod openapi;
mod station_commands;
pub mod stream;

/// Response types of the API, for clients (the CLI, tests).
pub mod api_types {
    pub use super::api::{
        AddedStation, ClockView, CommandResult, EventPage, Readiness, SessionView, StationView,
    };
    pub use super::mqtt_accounts::{CreatedAccount, MqttCredentials};
    pub use super::station_commands::SentCommand;
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
use std::sync::Arc;
use tokio::net::UnixListener;

/// Largest request body accepted; commands are small.
pub const MAX_BODY: usize = 64 * 1024;

/// Longest any request may take, body upload included; the live stream is exempt.
pub const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Answer `503 timeout` when a request runs past [`REQUEST_TIMEOUT`].
async fn time_limit(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    if req.uri().path() == "/api/v1/stream" {
        return next.run(req).await;
    }
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            "the request took too long and was abandoned",
        )
        .into_response(),
    }
}

#[derive(Clone, Debug)]
pub struct AppState {
    pub engine: Engine,
    pub auth: auth::Auth,
    /// Served over HTTPS: login cookies are `Secure`.
    pub https: bool,
}

/// The whole API, without transport concerns: callers insert a [`Caller`] extension.
/// This is what the control socket serves (its permissions stand in for login).
pub fn router(engine: Engine) -> Router {
    api::routes()
        .merge(auth::token_routes())
        .merge(mqtt_accounts::routes())
        .merge(devices::routes())
        .merge(station_commands::routes())
        .merge(enrollment::routes())
        .merge(api::ops_routes())
        .merge(stream::routes())
        .merge(metrics::routes())
        .merge(openapi::routes())
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn(time_limit))
        .layer(metrics::layer())
        .with_state(AppState {
            engine,
            auth: auth::Auth::default(),
            https: false,
        })
}

/// The API for the network: every route authenticated and authorised by role, except
/// login, the probes and the OpenAPI document (`authz::PUBLIC`); security headers on
/// every answer.
pub fn network_router(engine: Engine, auth: auth::Auth, https: bool) -> Router {
    let protected = api::routes()
        .merge(auth::token_routes())
        .merge(mqtt_accounts::routes())
        .merge(devices::routes())
        .merge(station_commands::routes())
        .merge(enrollment::routes())
        .merge(auth::logout_routes())
        .merge(stream::routes())
        .merge(metrics::routes());
    let state = AppState {
        engine,
        auth,
        https,
    };
    protected
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::guard,
        ))
        .merge(auth::login_routes())
        .merge(enrollment::enroll_routes())
        .merge(api::ops_routes())
        .merge(openapi::routes())
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn(time_limit))
        .layer(metrics::layer())
        .layer(axum::middleware::from_fn(move |req, next| {
            auth::security_headers(https, req, next)
        }))
        .with_state(state)
}

/// Serve a network router (see [`network_router`]) on a plain TCP listener.
pub async fn serve_tcp(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(stream::closing(shutdown))
    .await
}

/// Plain HTTP when HTTPS is configured to take over: probes answer, everything else is
/// redirected to the same path on the first HTTPS port.
pub fn redirect_router(engine: Engine, https_port: u16) -> Router {
    use axum::http::{StatusCode, Uri, header};
    use axum::response::IntoResponse;
    let redirect = move |headers: axum::http::HeaderMap, uri: Uri| async move {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(|h| h.rsplit_once(':').map_or(h, |(name, _)| name))
            .filter(|h| {
                !h.is_empty()
                    && h.chars()
                        .all(|c| c.is_ascii_alphanumeric() || ".-[]:".contains(c))
            })
            .unwrap_or("localhost")
            .to_owned();
        let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
        (
            StatusCode::PERMANENT_REDIRECT,
            [(
                header::LOCATION,
                format!("https://{host}:{https_port}{path}"),
            )],
        )
            .into_response()
    };
    api::ops_routes()
        .with_state(AppState {
            engine,
            auth: auth::Auth::default(),
            https: false,
        })
        .fallback(redirect)
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
    ca: Option<Arc<enrollment::BoxCa>>,
    provision: Arc<crate::devices::provision::ProvisionSettings>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let mut app = router(engine).layer(axum::Extension(provision));
    if let Some(ca) = ca {
        app = app.layer(axum::Extension(ca));
    }
    let app = app.layer(axum::middleware::from_fn(
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
    .with_graceful_shutdown(stream::closing(shutdown))
    .await
}
