//! Facet's native WebSocket protocol at `/ws` (see docs/protocol.md).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;

use super::access::Viewer;
use super::subscription::{Selection, Subscription, Update};
use super::{ApiError, SharedState};
use crate::metrics::TransportLabel;
use crate::store::Change;

/// Close code for a client that fell too far behind; it may resume from its versions.
pub const CLOSE_TOO_SLOW: u16 = 4008;

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum ClientMessage {
    Subscribe {
        id: String,
        #[serde(flatten)]
        selection: Selection,
        /// Resume after this version instead of taking a snapshot.
        #[serde(default)]
        since: Option<u64>,
    },
    Unsubscribe {
        id: String,
    },
    /// A fresh token, so the connection outlives the one it opened with.
    Auth {
        token: String,
    },
    Ping,
}

/// Close code when the client's token has expired (or a fresh one is not valid).
pub const CLOSE_TOKEN_EXPIRED: u16 = 4401;

pub async fn upgrade(
    State(state): State<SharedState>,
    Query(query): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let viewer = state.viewer(&headers, &query).await?;
    let slot = state.connection_slot()?;
    let max = state.experience.spec.api.limits.max_message_bytes as usize;
    Ok(ws
        .max_message_size(max)
        .on_upgrade(move |socket| async move {
            Connection::new(state, viewer).run(socket).await;
            drop(slot);
        }))
}

struct Connection {
    state: SharedState,
    viewer: Viewer,
    subscriptions: HashMap<String, Subscription>,
}

/// Why a connection ends, when the server ends it.
struct Close(u16, String);

impl Connection {
    fn new(state: SharedState, viewer: Viewer) -> Self {
        Connection {
            state,
            viewer,
            subscriptions: HashMap::new(),
        }
    }

    fn subscriptions_gauge(&self) -> prometheus_client::metrics::gauge::Gauge {
        let label = TransportLabel {
            transport: "websocket".into(),
        };
        self.state
            .metrics
            .subscriptions
            .get_or_create(&label)
            .clone()
    }

    async fn run(mut self, mut socket: WebSocket) {
        let _connection = self.state.metrics.connection("websocket");
        // Subscribed before any snapshot is read, so no change can fall in between.
        let mut feed = self.state.feed.subscribe();
        let result = loop {
            let expiry = self.viewer.expires_in();
            tokio::select! {
                _ = tokio::time::sleep(expiry.unwrap_or(Duration::MAX)), if expiry.is_some() => {
                    break Err(Close(CLOSE_TOKEN_EXPIRED, "token expired: send {\"type\":\"auth\"} with a fresh token before it does, or reconnect".into()));
                }
                incoming = socket.recv() => match incoming {
                    Some(Ok(Message::Text(text))) => {
                        if let Err(close) = self.on_message(&mut socket, text.as_str()).await {
                            break Err(close);
                        }
                    }
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break Ok(()),
                    Some(Ok(_)) => {}
                },
                change = feed.recv() => {
                    let outcome = match change {
                        Ok(change) => self.on_change(&mut socket, &change).await,
                        Err(RecvError::Lagged(_)) => self.catch_up(&mut socket).await,
                        Err(RecvError::Closed) => break Ok(()),
                    };
                    if let Err(close) = outcome {
                        break Err(close);
                    }
                }
            }
        };
        if let Err(Close(code, reason)) = result {
            let frame = CloseFrame {
                code,
                reason: Utf8Bytes::from(reason),
            };
            let _ =
                tokio::time::timeout(SEND_TIMEOUT, socket.send(Message::Close(Some(frame)))).await;
        }
        self.subscriptions_gauge()
            .dec_by(self.subscriptions.len() as i64);
    }

    async fn on_message(&mut self, socket: &mut WebSocket, text: &str) -> Result<(), Close> {
        let message: ClientMessage = match serde_json::from_str(text) {
            Ok(message) => message,
            Err(e) => {
                return send(socket, &serde_json::json!({"type": "error", "message": format!("unreadable message: {e}")})).await;
            }
        };
        match message {
            ClientMessage::Ping => send(socket, &serde_json::json!({"type": "pong"})).await,
            ClientMessage::Auth { token } => {
                let mut headers = HeaderMap::new();
                let bearer = format!("Bearer {token}");
                if let Ok(value) = bearer.parse() {
                    headers.insert(axum::http::header::AUTHORIZATION, value);
                }
                match self.state.viewer(&headers, &BTreeMap::new()).await {
                    Ok(viewer) => {
                        for subscription in self.subscriptions.values_mut() {
                            subscription.set_viewer(viewer.clone());
                        }
                        self.viewer = viewer;
                        send(socket, &serde_json::json!({"type": "auth_ok"})).await
                    }
                    Err(e) => Err(Close(CLOSE_TOKEN_EXPIRED, truncate(e.message))),
                }
            }
            ClientMessage::Unsubscribe { id } => {
                if self.subscriptions.remove(&id).is_some() {
                    self.subscriptions_gauge().dec();
                }
                Ok(())
            }
            ClientMessage::Subscribe {
                id,
                selection,
                since,
            } => {
                let limit = self
                    .state
                    .experience
                    .spec
                    .api
                    .limits
                    .max_subscriptions_per_connection as usize;
                if self.subscriptions.len() >= limit && !self.subscriptions.contains_key(&id) {
                    return send_error(
                        socket,
                        &id,
                        format!("at most {limit} subscriptions per connection"),
                    )
                    .await;
                }
                let state = self.state.clone();
                let Some(projection) = state.experience.projection(&selection.projection) else {
                    return send_error(
                        socket,
                        &id,
                        format!("no projection named `{}`", selection.projection),
                    )
                    .await;
                };
                let mut subscription = Subscription::new(selection, self.viewer.clone());
                let updates = match subscription.start(projection, &state.store, since) {
                    Ok(updates) => updates,
                    Err(e) => return send_error(socket, &id, ApiError::internal(e).message).await,
                };
                for update in updates {
                    send_update(socket, &self.state, &id, &update).await?;
                }
                if self.subscriptions.insert(id, subscription).is_none() {
                    self.subscriptions_gauge().inc();
                }
                Ok(())
            }
        }
    }

    async fn on_change(
        &mut self,
        socket: &mut WebSocket,
        change: &Arc<Change>,
    ) -> Result<(), Close> {
        let state = self.state.clone();
        let Some(projection) = state.experience.projection(&change.projection) else {
            return Ok(());
        };
        for (id, subscription) in self.subscriptions.iter_mut() {
            if let Some(update) = subscription.on_change(projection, change) {
                send_update(socket, &state, id, &update).await?;
            }
        }
        Ok(())
    }

    /// The feed moved on without this client: catch up from the store's change log,
    /// unless that is more than the client may fall behind by.
    async fn catch_up(&mut self, socket: &mut WebSocket) -> Result<(), Close> {
        let state = self.state.clone();
        let max_pending = state.experience.spec.api.limits.max_pending_rows as usize;
        // What the client has received, for the close reason if it must resume.
        let received: BTreeMap<String, u64> = self
            .subscriptions
            .iter()
            .map(|(id, s)| (id.clone(), s.cursor))
            .collect();
        let mut pending = Vec::new();
        for (id, subscription) in self.subscriptions.iter_mut() {
            let Some(projection) = state
                .experience
                .projection(&subscription.selection.projection)
            else {
                continue;
            };
            let updates = subscription
                .catch_up(projection, &state.store)
                .map_err(|e| Close(1011, ApiError::internal(e).message))?;
            pending.extend(updates.into_iter().map(|u| (id.clone(), u)));
        }
        if pending.len() > max_pending {
            state.metrics.slow_client_disconnects.inc();
            let reason = format!(
                "too slow; resume with since: {}",
                serde_json::to_string(&received).unwrap_or_default()
            );
            return Err(Close(CLOSE_TOO_SLOW, truncate(reason)));
        }
        for (id, update) in pending {
            send_update(socket, &state, &id, &update).await?;
        }
        Ok(())
    }
}

/// Close reasons must fit in a control frame.
pub(super) fn truncate(mut reason: String) -> String {
    if reason.len() > 120 {
        let mut cut = 120;
        while !reason.is_char_boundary(cut) {
            cut -= 1;
        }
        reason.truncate(cut);
    }
    reason
}

async fn send_update(
    socket: &mut WebSocket,
    state: &SharedState,
    id: &str,
    update: &Update,
) -> Result<(), Close> {
    let mut value = serde_json::to_value(update).map_err(|e| Close(1011, e.to_string()))?;
    value["id"] = id.into();
    send(socket, &value).await?;
    state
        .metrics
        .delivered("websocket", update.delivery_latency());
    Ok(())
}

async fn send_error(socket: &mut WebSocket, id: &str, message: String) -> Result<(), Close> {
    send(
        socket,
        &serde_json::json!({"type": "error", "id": id, "message": message}),
    )
    .await
}

/// A client that does not take a message within this time is too slow to keep.
pub(super) const SEND_TIMEOUT: Duration = Duration::from_secs(10);

async fn send(socket: &mut WebSocket, value: &serde_json::Value) -> Result<(), Close> {
    match tokio::time::timeout(
        SEND_TIMEOUT,
        socket.send(Message::Text(value.to_string().into())),
    )
    .await
    {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(Close(1001, "gone".into())),
        Err(_) => Err(Close(
            CLOSE_TOO_SLOW,
            "too slow: a message waited too long to be read".into(),
        )),
    }
}
