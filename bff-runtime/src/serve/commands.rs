//! `POST /v1/commands/<name>`: a command over HTTP. The body is its input; an
//! `Idempotency-Key` header makes retries safe; `Prefer: wait=<seconds>` (RFC
//! 7240) bounds how long the answer waits for the effect to be visible (the
//! command's `maxWaitMs` by default), `Prefer: respond-async` does not wait.
//! 200 with the position once visible, 202 when only accepted.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::access::Viewer;
use super::SharedState;
use crate::command::{CommandError, CommandRequest, Outcome, Status};

pub async fn send(
    State(state): State<SharedState>,
    Path(name): Path<String>,
    Query(query): Query<BTreeMap<String, String>>,
    request: axum::extract::Request,
) -> Result<Response, Response> {
    let viewer = state
        .viewer(request.headers(), &query)
        .await
        .map_err(IntoResponse::into_response)?;
    let headers = request.headers().clone();
    let max = state.experience.spec.api.limits.max_message_bytes as usize;
    let body = axum::body::to_bytes(request.into_body(), max)
        .await
        .map_err(|_| {
            error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("the body is larger than {max} bytes (maxMessageBytes)"),
                None,
            )
        })?;
    let input: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            "invalid_input",
            format!("the body is not JSON: {e}"),
            None,
        )
    })?;
    let command = Command {
        name,
        input,
        idempotency_key: header(&headers, "idempotency-key"),
        wait: preferred_wait(&headers),
        traceparent: header(&headers, "traceparent"),
    };
    let outcome = dispatch(&state, &viewer, command).await.map_err(refusal)?;
    Ok(answer(outcome))
}

/// A command as a transport received it.
pub struct Command {
    pub name: String,
    pub input: serde_json::Value,
    pub idempotency_key: Option<String>,
    /// How long the answer may wait for the effect to be visible.
    pub wait: Duration,
    pub traceparent: Option<String>,
}

/// Sends a command for `viewer`: REST, the WebSocket and GraphQL all send here.
pub async fn dispatch(
    state: &SharedState,
    viewer: &Viewer,
    command: Command,
) -> Result<Outcome, CommandError> {
    let commands = state.commands.as_deref().ok_or(CommandError::NoCommands)?;
    commands
        .send(CommandRequest {
            name: command.name,
            input: command.input,
            claims: claims_of(viewer),
            idempotency_key: command.idempotency_key,
            wait: command.wait,
            traceparent: command.traceparent,
        })
        .await
}

/// The claims a command sees as `auth`; the dev console acts as user `console`.
fn claims_of(viewer: &Viewer) -> serde_json::Value {
    match viewer {
        Viewer::Console => serde_json::json!({"sub": "console"}),
        Viewer::Claims(claims) => claims.clone(),
    }
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}

/// `Prefer: wait=5` → 5 s; `respond-async` → none; otherwise as long as allowed.
fn preferred_wait(headers: &HeaderMap) -> Duration {
    let prefer = header(headers, "prefer").unwrap_or_default();
    for preference in prefer.split(',').map(str::trim) {
        if preference == "respond-async" {
            return Duration::ZERO;
        }
        if let Some(seconds) = preference.strip_prefix("wait=") {
            if let Ok(seconds) = seconds.trim().parse::<u64>() {
                return Duration::from_secs(seconds);
            }
        }
    }
    Duration::MAX
}

fn answer(outcome: Outcome) -> Response {
    let status = match outcome.status {
        Status::Visible => StatusCode::OK,
        Status::Accepted => StatusCode::ACCEPTED,
    };
    (status, Json(outcome)).into_response()
}

fn error(status: StatusCode, code: &str, message: String, field: Option<String>) -> Response {
    let mut body = serde_json::json!({"error": {"code": code, "message": message}});
    if let Some(field) = field {
        body["error"]["field"] = field.into();
    }
    (status, Json(body)).into_response()
}

/// A refused command: the status says why, the body names the field when one is wrong.
pub fn refusal(e: CommandError) -> Response {
    let status = match &e {
        CommandError::Unknown(_) | CommandError::NoCommands => StatusCode::NOT_FOUND,
        CommandError::Invalid { .. } => StatusCode::BAD_REQUEST,
        CommandError::Forbidden(_) => StatusCode::FORBIDDEN,
        CommandError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        CommandError::Failed(_) | CommandError::KeyReused(_) => StatusCode::UNPROCESSABLE_ENTITY,
        CommandError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
    };
    let field = match &e {
        CommandError::Invalid { field, .. } => field.clone(),
        _ => None,
    };
    let mut response = error(status, e.code(), e.to_string(), field);
    if let CommandError::RateLimited(wait) = &e {
        let seconds = crate::command::retry_after_seconds(*wait);
        response
            .headers_mut()
            .insert(axum::http::header::RETRY_AFTER, seconds.into());
    }
    response
}
