//! The admin CLI's way to the API: HTTP over the control socket when an instance runs,
//! otherwise the same router in-process on the store opened directly.

use crate::clock::SystemClock;
use crate::config::Config;
use crate::domain::Actor;
use crate::engine::Engine;
use crate::http::{Caller, Problem};
use crate::store::{StoreError, StoreLocation};
use axum::Router;
use axum::body::Body;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::net::UnixStream;
use tower::ServiceExt;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{detail} [{code}]")]
    Api {
        status: StatusCode,
        code: String,
        detail: String,
    },
    #[error(
        "venued is running (its store is locked) but the control socket {socket} does not answer: {reason}"
    )]
    SocketDead { socket: PathBuf, reason: String },
    #[error("cannot open the store in {dir}: {source}")]
    Store {
        dir: PathBuf,
        #[source]
        source: StoreError,
    },
    #[error("talking to the control socket failed: {0}")]
    Transport(String),
    #[error("unexpected answer from venued: {0}")]
    Decode(String),
}

enum Target {
    Socket(PathBuf),
    Direct { router: Router, engine: Engine },
}

pub struct Client {
    target: Target,
}

impl Client {
    /// Reach the running instance, or open the store directly when none runs.
    pub async fn connect(config: &Config) -> Result<Self, ClientError> {
        let socket = config.socket_path();
        let probe_error = match UnixStream::connect(&socket).await {
            Ok(_) => {
                return Ok(Self {
                    target: Target::Socket(socket),
                });
            }
            Err(e) => e,
        };
        let engine_config = super::engine_config(config);
        let location = StoreLocation::Dir(config.data.dir.clone());
        let options = super::store_options(config);
        let clock = Arc::new(SystemClock::new(config.clock.trust));
        let started = tokio::task::spawn_blocking(move || {
            Engine::start(location, options, engine_config, clock)
        })
        .await
        .map_err(|e| ClientError::Transport(e.to_string()))?;
        match started {
            Ok(engine) => Ok(Self {
                target: Target::Direct {
                    router: crate::http::router(engine.clone()),
                    engine,
                },
            }),
            Err(StoreError::AlreadyOpen(_)) => Err(ClientError::SocketDead {
                socket,
                reason: probe_error.to_string(),
            }),
            Err(source) => Err(ClientError::Store {
                dir: config.data.dir.clone(),
                source,
            }),
        }
    }

    pub fn is_direct(&self) -> bool {
        matches!(self.target, Target::Direct { .. })
    }

    /// Send one request; a problem+json answer becomes `ClientError::Api`.
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        idempotency_key: Option<&str>,
    ) -> Result<T, ClientError> {
        let bytes = match body {
            Some(v) => {
                Bytes::from(serde_json::to_vec(v).map_err(|e| ClientError::Decode(e.to_string()))?)
            }
            None => Bytes::new(),
        };
        let mut builder = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "venued");
        if body.is_some() {
            builder = builder.header("content-type", "application/json");
        }
        if let Some(key) = idempotency_key {
            builder = builder.header("idempotency-key", key);
        }
        let (status, answer) = match &self.target {
            Target::Socket(socket) => {
                let req = builder
                    .body(Full::new(bytes))
                    .map_err(|e| ClientError::Transport(e.to_string()))?;
                send_over_socket(socket, req).await?
            }
            Target::Direct { router, .. } => {
                let mut req = builder
                    .body(Body::from(bytes))
                    .map_err(|e| ClientError::Transport(e.to_string()))?;
                req.extensions_mut().insert(Caller(Actor::Local {
                    uid: Some(super::current_uid()),
                }));
                let resp = router
                    .clone()
                    .oneshot(req)
                    .await
                    .map_err(|e| ClientError::Transport(e.to_string()))?;
                let status = resp.status();
                let body = resp
                    .into_body()
                    .collect()
                    .await
                    .map_err(|e| ClientError::Transport(e.to_string()))?
                    .to_bytes();
                (status, body)
            }
        };
        if !status.is_success() {
            return Err(match serde_json::from_slice::<Problem>(&answer) {
                Ok(p) => ClientError::Api {
                    status,
                    code: p.code,
                    detail: p.detail,
                },
                Err(_) => ClientError::Api {
                    status,
                    code: "http_error".into(),
                    detail: String::from_utf8_lossy(&answer).into_owned(),
                },
            });
        }
        // 204 No Content reads as JSON null.
        let answer: &[u8] = if answer.is_empty() { b"null" } else { &answer };
        serde_json::from_slice(answer).map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// Close: a direct engine commits and stops.
    pub async fn close(self) {
        if let Target::Direct { engine, .. } = self.target {
            engine.shutdown().await;
        }
    }
}

async fn send_over_socket(
    socket: &Path,
    req: hyper::Request<Full<Bytes>>,
) -> Result<(StatusCode, Bytes), ClientError> {
    let transport = |e: &dyn std::fmt::Display| ClientError::Transport(e.to_string());
    let stream = UnixStream::connect(socket)
        .await
        .map_err(|e| transport(&e))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| transport(&e))?;
    let connection = tokio::spawn(conn);
    let resp = sender.send_request(req).await.map_err(|e| transport(&e))?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| transport(&e))?
        .to_bytes();
    connection.abort();
    Ok((status, body))
}
