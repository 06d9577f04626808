//! Server-sent events at `/sse/<projection>`: `?key=` for one row, other query
//! parameters filter on fields, `Last-Event-ID` (or `?since=`) resumes. Each event's
//! id is the position it brings the client to.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::stream::{self, StreamExt};

use super::wire::{native_json, position};
use super::{ApiError, SharedState};
use crate::live::stream::{updates, Item};
use crate::live::{Close, Selection, Session, SubscribeError, Update};

const RESERVED: &[&str] = &["key", "since", "as", "access_token", "delta"];
const SUBSCRIPTION: &str = "sse";
const TRANSPORT: &str = "sse";

pub async fn stream(
    State(state): State<SharedState>,
    Path(projection): Path<String>,
    Query(query): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let viewer = state.viewer(&headers, &query).await?;
    let slot = state.connection_slot()?;
    let compiled = state.projection(&projection)?;
    let since = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .or(query.get("since").map(String::as_str))
        .map(str::to_string);
    let filter = super::rest::query_filter(compiled, &query, RESERVED)?;
    let selection = Selection {
        projection,
        key: query.get("key").cloned(),
        filter,
        delta: query.get("delta").is_some_and(|v| v == "true"),
        fields: None,
    };
    let reader = state.reader(&headers, &viewer, None);
    let mut session = Session::new(state.live.clone(), viewer, TRANSPORT).read_by(reader);
    let first = session
        .subscribe(SUBSCRIPTION, selection, since.as_deref())
        .await
        .map_err(|e| match e {
            SubscribeError::Failed(close) => ApiError::internal(close.reason()),
            SubscribeError::UnknownProjection(_) => ApiError::not_found(e.to_string()),
            other => ApiError::bad_request(other.to_string()),
        })?;
    // Held by the stream: the client gone, it lowers the gauge and frees the slot.
    let held = (state.metrics.connection(TRANSPORT), slot);
    let events = updates(session, first, stream::pending().boxed(), ()).map(move |item| {
        let _held = &held;
        Ok::<_, Infallible>(match item {
            Item::Update(update) => event(&update),
            Item::Closed(close) => closing(&close),
        })
    });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

/// The last event of a stream the server ends. EventSource reconnects by itself
/// with `Last-Event-ID`; after `expired` it needs a fresh token to be let back in.
fn closing(close: &Close) -> Event {
    let name = match close {
        Close::TokenExpired | Close::TokenRefused(_) => "expired",
        _ => "close",
    };
    Event::default().event(name).data(
        serde_json::json!({"type": name, "code": close.code(), "reason": close.reason()})
            .to_string(),
    )
}

fn event(update: &Update) -> Event {
    let name = match update {
        Update::Snapshot { .. } => "snapshot",
        Update::Change { .. } => "change",
        Update::Reset { .. } => "reset",
    };
    let event = Event::default().event(name).data(native_json(None, update));
    match (position(update), update) {
        (Some(position), _) => event.id(position),
        // The position the client came with is no longer one to come back to: it
        // reconnects for a fresh snapshot until the last page of this one gives it
        // a new one.
        (None, Update::Reset { .. }) => event.id(""),
        (None, _) => event,
    }
}
