//! HTTP serving: REST reads with their OpenAPI document, GraphQL, the native
//! WebSocket protocol, SSE, health and the development console. Everything is
//! generated from the spec; every row passes the projection's access rule.

pub mod access;
mod commands;
mod console;
pub mod graphql;
mod http_layers;
pub mod jwks;
pub mod jwt;
pub mod listener;
pub mod openapi;
mod rest;
pub mod server;
mod sse;
mod wire;
mod ws;

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use crate::ingest::Progress;
use crate::metrics::Metrics;
use crate::spec::{CompiledExperience, CompiledProjection};
use crate::store::Store;
use access::AuthMode;
pub use ws::{READ_BUFFER, WRITE_BUFFER};

/// What every handler reads.
pub struct AppState {
    /// `namespace/name` of the experience.
    pub experience_name: String,
    pub experience: Arc<CompiledExperience>,
    pub store: Arc<Store>,
    /// The live core every streaming transport subscribes through.
    pub live: Arc<crate::live::Hub>,
    pub metrics: Arc<Metrics>,
    pub progress: Arc<Progress>,
    pub auth: AuthMode,
    /// Dev mode lets the console send test events to a source.
    pub dev_producer: Option<Arc<dyn DevProducer>>,
    /// One permit per open streaming connection (`spec.api.limits.maxConnections`).
    pub connection_slots: Arc<tokio::sync::Semaphore>,
    /// One permit per streaming connection still waiting to authenticate
    /// (`spec.api.limits.maxUnauthenticatedConnections`).
    pub unauthenticated_slots: Arc<tokio::sync::Semaphore>,
    /// The GraphQL schema, when the spec turns GraphQL on.
    pub graphql: Option<async_graphql::dynamic::Schema>,
    /// Dev mode: the sample's events, to prefill the console's event form.
    pub sample_events: Vec<crate::dev::events::SampleEvent>,
    /// Whether the web console is served.
    pub console: bool,
    /// The write path, when the spec declares commands.
    pub commands: Option<Arc<crate::command::Commands>>,
}

/// Sends an event to a source topic (the console's "send a test event").
pub trait DevProducer: Send + Sync {
    fn send(&self, topic: &str, key: Option<&str>, value: &[u8]) -> Result<(), String>;
}

pub type SharedState = Arc<AppState>;

impl AppState {
    /// The client a request acts for; refusals are counted by reason.
    pub async fn viewer(
        &self,
        headers: &axum::http::HeaderMap,
        query: &std::collections::BTreeMap<String, String>,
    ) -> Result<access::Viewer, ApiError> {
        let viewer = self.auth.viewer(headers, query).await;
        viewer.map_err(|refused| self.refused(refused))
    }

    /// Who field usage counts a request's or connection's reads for: the client
    /// the request names (`graphql-client-name`), else the token's client.
    pub fn reader(
        &self,
        headers: &axum::http::HeaderMap,
        viewer: &access::Viewer,
        operation: Option<&str>,
    ) -> crate::usage::Reader {
        let named = headers
            .get(crate::usage::CLIENT_HEADER)
            .and_then(|v| v.to_str().ok());
        self.metrics
            .usage
            .reader(named.or(viewer.client()), operation)
    }

    /// The viewer a token sent in-band stands for; refusals counted by reason.
    pub async fn viewer_for_token(&self, token: &str) -> Result<access::Viewer, ApiError> {
        let viewer = self.auth.viewer_for_token(token).await;
        viewer.map_err(|refused| self.refused(refused))
    }

    fn refused(&self, refused: access::Refused) -> ApiError {
        self.metrics
            .auth_failures
            .get_or_create(&crate::metrics::ReasonLabel {
                reason: refused.reason.into(),
            })
            .inc();
        refused.into()
    }

    /// A slot for one more streaming connection, or a refusal when all are taken.
    pub fn connection_slot(&self) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
        self.connection_slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                code: "too_many_connections",
                message: "this server has reached its connection limit; retry later".into(),
            })
    }

    /// A slot for a connection that has yet to authenticate; it takes a
    /// [`Self::connection_slot`] once it has.
    pub fn unauthenticated_slot(&self) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
        self.unauthenticated_slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                code: "too_many_connections",
                message: "too many connections are waiting to authenticate; retry later".into(),
            })
    }

    pub fn projection(&self, name: &str) -> Result<&CompiledProjection, ApiError> {
        self.experience
            .projection(name)
            .ok_or_else(|| ApiError::not_found(format!("no projection named `{name}`")))
    }
}

/// The public HTTP API.
pub fn router(state: SharedState) -> Router {
    let api = &state.experience.spec.api;
    let mut router = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz));
    if state.console {
        router = router
            .route("/console/info", get(console::info))
            .route("/console/client.js", get(console::client_script))
            .route("/", get(console::page));
    }
    if api.rest {
        router = router
            .route("/openapi.json", get(openapi_document))
            .route("/v1/{projection}", get(rest::list))
            .route("/v1/{projection}/{key}", get(rest::one));
    }
    if api.rest && state.commands.is_some() {
        router = router.route("/v1/commands/{name}", axum::routing::post(commands::send));
    }
    if api.graphql {
        router = router
            .route("/graphql", get(graphql::graphiql).post(graphql::execute))
            .route("/graphql/ws", get(graphql::subscriptions));
    }
    if api.websocket {
        router = router.route("/ws", get(ws::upgrade));
    }
    if api.sse {
        router = router.route("/sse/{projection}", get(sse::stream));
    }
    if state.dev_producer.is_some() {
        router = router.route("/console/events", axum::routing::post(console::send_event));
    }
    http_layers::wrap(router.with_state(state.clone()), state)
}

/// The internal port, never exposed with the API: metrics, and the readiness
/// report in full (topics, partitions, Kafka's errors) for the operator and for
/// people debugging a pod.
pub fn internal_router(metrics: Arc<Metrics>, progress: Arc<crate::ingest::Progress>) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move {
                    (
                        [(
                            "content-type",
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        metrics.encode(),
                    )
                }
            }),
        )
        .route(
            "/readyz",
            get(move || {
                let report = progress.report();
                async move { (readiness_status(report.ready), Json(report)) }
            }),
        )
}

async fn openapi_document(State(state): State<SharedState>) -> Json<serde_json::Value> {
    Json(openapi::document(&state.experience, &state.experience_name))
}

/// Public readiness: whether, and nothing about the topics, partitions or Kafka's
/// errors behind it (those are on the internal port's `/readyz`).
async fn readyz(State(state): State<SharedState>) -> Response {
    let ready = state.progress.is_ready();
    let body = serde_json::json!({
        "ready": ready,
        "details": "on the metrics port's /readyz",
    });
    (readiness_status(ready), Json(body)).into_response()
}

fn readiness_status(ready: bool) -> StatusCode {
    match ready {
        true => StatusCode::OK,
        false => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// An error as clients see it: a status, a stable code and a message.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn not_found(message: String) -> Self {
        ApiError {
            status: StatusCode::NOT_FOUND,
            code: "not_found",
            message,
        }
    }

    pub fn bad_request(message: String) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "bad_request",
            message,
        }
    }

    /// An internal failure: details go to the log with a correlation id, the client
    /// gets only the id.
    pub fn internal(error: impl std::fmt::Display) -> Self {
        let id = log_internal(error);
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "internal",
            message: format!("internal error (correlation id {id})"),
        }
    }
}

impl From<access::Refused> for ApiError {
    fn from(refused: access::Refused) -> Self {
        ApiError {
            status: refused.status,
            code: refused.reason,
            message: refused.message,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": {"code": self.code, "message": self.message}});
        (self.status, Json(body)).into_response()
    }
}

pub use crate::logging::{correlation_id, log_internal};
