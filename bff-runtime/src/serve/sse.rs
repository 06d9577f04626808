//! Server-sent events at `/sse/<projection>`: `?key=` for one row, other query
//! parameters filter on fields, `Last-Event-ID` (or `?since=`) resumes.

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::stream::{self, Stream};
use tokio::sync::broadcast::{self, error::RecvError};

use super::subscription::{Selection, Subscription, Update};
use super::{ApiError, SharedState};
use crate::store::Change;

const RESERVED: &[&str] = &["key", "since", "as", "access_token", "delta"];

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
        .map(|v| {
            v.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("`{v}` is not a version")))
        })
        .transpose()?;
    let filter = query
        .iter()
        .filter(|(k, _)| !RESERVED.contains(&k.as_str()))
        .map(|(k, v)| {
            (
                k.clone(),
                serde_json::from_str(v).unwrap_or_else(|_| serde_json::Value::String(v.clone())),
            )
        })
        .collect();
    let selection = Selection {
        projection,
        key: query.get("key").cloned(),
        filter,
        delta: query.get("delta").is_some_and(|v| v == "true"),
    };
    // Subscribed before the snapshot is read, so no change can fall in between.
    let feed = state.feed.subscribe();
    let expires_at = viewer
        .expires_in()
        .map(|left| tokio::time::Instant::now() + left);
    let mut subscription = Subscription::new(selection, viewer);
    let first = subscription
        .start(compiled, &state.store, since)
        .map_err(ApiError::internal)?;
    let held = Held {
        _connection: state.metrics.connection("sse"),
        _subscription: state.metrics.subscription("sse"),
        _slot: slot,
    };
    let stream = updates(state, subscription, feed, first.into(), expires_at, held);
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

/// What the stream holds while the client is connected: dropped (the client went
/// away), it lowers the gauges and frees the connection slot.
struct Held {
    _connection: crate::metrics::Held,
    _subscription: crate::metrics::Held,
    _slot: tokio::sync::OwnedSemaphorePermit,
}

struct StreamState {
    state: SharedState,
    subscription: Subscription,
    feed: broadcast::Receiver<std::sync::Arc<Change>>,
    queue: VecDeque<Update>,
    /// When the token expires; the stream then sends `expired` and ends.
    expires_at: Option<tokio::time::Instant>,
    ended: bool,
    _held: Held,
}

fn updates(
    state: SharedState,
    subscription: Subscription,
    feed: broadcast::Receiver<std::sync::Arc<Change>>,
    queue: VecDeque<Update>,
    expires_at: Option<tokio::time::Instant>,
    held: Held,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let initial = StreamState {
        state,
        subscription,
        feed,
        queue,
        expires_at,
        ended: false,
        _held: held,
    };
    stream::unfold(initial, |mut s| async move {
        if s.ended {
            return None;
        }
        loop {
            if let Some(update) = s.queue.pop_front() {
                s.state.metrics.delivered("sse", update.delivery_latency());
                return Some((Ok(event(&update)), s));
            }
            let state = s.state.clone();
            let projection = state
                .experience
                .projection(&s.subscription.selection.projection)?;
            let received = match s.expires_at {
                Some(at) => tokio::select! {
                    received = s.feed.recv() => received,
                    () = tokio::time::sleep_until(at) => {
                        s.ended = true;
                        return Some((Ok(expired()), s));
                    }
                },
                None => s.feed.recv().await,
            };
            match received {
                Ok(change) => s
                    .queue
                    .extend(s.subscription.on_change(projection, &change)),
                Err(RecvError::Lagged(_)) => {
                    match s.subscription.catch_up(projection, &state.store) {
                        Ok(updates) => s.queue.extend(updates),
                        Err(e) => {
                            ApiError::internal(e);
                            return None;
                        }
                    }
                }
                Err(RecvError::Closed) => return None,
            }
        }
    })
}

/// The last event of a stream whose token expired. EventSource would reconnect
/// with the same token and be refused; a client with a fresh token reconnects
/// with `Last-Event-ID` and misses nothing.
fn expired() -> Event {
    Event::default().event("expired").data(
        serde_json::json!({"type": "expired", "reason": "token expired: reconnect with a fresh token and Last-Event-ID"})
            .to_string(),
    )
}

fn event(update: &Update) -> Event {
    let data = serde_json::to_string(update).unwrap_or_default();
    let (name, version) = match update {
        Update::Snapshot { version, .. } => ("snapshot", Some(*version)),
        Update::Change { version, .. } => ("change", Some(*version)),
        Update::Reset { .. } => ("reset", None),
    };
    let event = Event::default().event(name).data(data);
    match version {
        Some(v) => event.id(v.to_string()),
        None => event,
    }
}
