//! Server-sent events at `/sse/<projection>`: `?key=` for one row, other query
//! parameters filter on fields, `Last-Event-ID` (or `?since=`) resumes. Each event's
//! id is the position it brings the client to.

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::stream::{self, Stream};

use super::wire::{native_json, position};
use super::{ApiError, SharedState};
use crate::live::{Close, Selection, Session, SubscribeError, Update};

const RESERVED: &[&str] = &["key", "since", "as", "access_token", "delta"];
const SUBSCRIPTION: &str = "sse";

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
    };
    let mut session = Session::new(state.live.clone(), viewer);
    let first = session
        .subscribe(SUBSCRIPTION, selection, since.as_deref())
        .await
        .map_err(|e| match e {
            SubscribeError::Failed(close) => ApiError::internal(close.reason()),
            SubscribeError::UnknownProjection(_) => ApiError::not_found(e.to_string()),
            other => ApiError::bad_request(other.to_string()),
        })?;
    let held = Held {
        _connection: state.metrics.connection("sse"),
        _subscription: state.metrics.subscription("sse"),
        _slot: slot,
    };
    let stream = events(state, session, first.into(), held);
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

struct Streaming {
    state: SharedState,
    session: Session,
    queue: VecDeque<Update>,
    ended: bool,
    _held: Held,
}

fn events(
    state: SharedState,
    session: Session,
    queue: VecDeque<Update>,
    held: Held,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let initial = Streaming {
        state,
        session,
        queue,
        ended: false,
        _held: held,
    };
    stream::unfold(initial, |mut s| async move {
        loop {
            if let Some(update) = s.queue.pop_front() {
                if let Update::Change { change, .. } = &update {
                    s.state.metrics.delivered("sse", change.delivery_latency());
                }
                return Some((Ok(event(&update)), s));
            }
            if s.ended {
                return None;
            }
            match s.session.next().await {
                Ok(outs) => s.queue.extend(outs.into_iter().map(|o| o.update)),
                Err(close) => {
                    s.ended = true;
                    return Some((Ok(closing(&close)), s));
                }
            }
        }
    })
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
    match position(update) {
        Some(position) => event.id(position),
        None => event,
    }
}
