//! The web console: live tables of every projection, fed by the same public
//! WebSocket protocol a frontend uses. The page is embedded in the binary.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::{ApiError, SharedState};

const PAGE: &str = include_str!("console.html");

/// The TypeScript client package (clients/typescript), bundled: the console
/// uses the same client as any frontend. `make console-client` regenerates it.
const CLIENT: &str = include_str!("console-client.js");

pub async fn page() -> Html<&'static str> {
    Html(PAGE)
}

pub async fn client_script() -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/javascript; charset=utf-8",
        )],
        CLIENT,
    )
}

/// What the console needs to draw itself.
pub async fn info(State(state): State<SharedState>) -> Json<serde_json::Value> {
    let spec = &state.experience.spec;
    let projections: Vec<_> = state
        .experience
        .projections
        .iter()
        .map(|p| {
            json!({
                "name": p.name,
                "fields": p.fields.iter().map(|(name, f)| json!({"name": name, "type": f.field_type.as_str()})).collect::<Vec<_>>(),
                "access": p.access.as_ref().map(|a| a.source.clone()),
            })
        })
        .collect();
    Json(json!({
        "experience": state.experience_name,
        "projections": projections,
        "sources": spec.sources,
        "commands": state.experience.commands.iter().map(|c| json!({
            "name": c.name,
            "description": c.description,
            "input": c.input.iter().map(|(name, f)| json!({"name": name, "type": f.field_type.as_str(), "required": c.is_required(name)})).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "api": spec.api,
        // Links the console shows: only to what this runtime serves.
        "links": {"openapi": spec.api.rest, "graphiql": state.graphql.is_some()},
        "progress": state.progress.report(),
        "canSendEvents": state.dev_producer.is_some(),
        "sampleEvents": state.sample_events,
        "devUsers": matches!(state.auth, super::access::AuthMode::Dev),
        "metrics": {
            "eventsApplied": state.metrics.events_applied.get(),
            "rowChanges": state.metrics.row_changes.get(),
            "batches": state.metrics.batches_committed.get(),
        },
    }))
}

#[derive(Deserialize)]
pub struct TestEvent {
    source: String,
    #[serde(default)]
    key: Option<String>,
    value: serde_json::Value,
}

/// Sends a test event to a source's topic, so a user can watch a rule fire.
pub async fn send_event(
    State(state): State<SharedState>,
    Json(event): Json<TestEvent>,
) -> Result<Response, ApiError> {
    let Some(producer) = &state.dev_producer else {
        return Err(ApiError::not_found(
            "sending events is only available in dev mode".into(),
        ));
    };
    let Some(source) = state
        .experience
        .spec
        .sources
        .iter()
        .find(|s| s.name == event.source)
    else {
        return Err(ApiError::bad_request(format!(
            "no source named `{}`",
            event.source
        )));
    };
    // Sending waits for the broker (up to 5 s): not on an async worker.
    let (producer, topic) = (producer.clone(), source.topic.clone());
    let payload = event.value.to_string();
    let key = event.key.clone();
    tokio::task::spawn_blocking(move || producer.send(&topic, key.as_deref(), payload.as_bytes()))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"sent": true, "topic": source.topic})),
    )
        .into_response())
}
