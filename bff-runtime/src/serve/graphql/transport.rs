//! One GraphQL WebSocket connection (graphql-transport-ws, and the older graphql-ws):
//! async-graphql speaks the protocol; this module adds what Facet promises on every
//! streaming connection: the token's expiry closes it with 4401 unless a fresh token
//! arrives in-band (a `ping` whose payload carries `token`), and a client that stops
//! reading for 10 seconds is closed instead of holding memory and a connection slot.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_graphql::dynamic::Schema;
use async_graphql::Data;
use async_graphql_axum::{GraphQLProtocol, GraphQLWebSocket};
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures::{SinkExt, StreamExt};
use tokio::sync::{watch, OwnedSemaphorePermit};

use super::connection::{Auth, ClientName, LiveViewer, SubscriptionBudget};
use crate::live::close::{Close, INIT_WITHIN, SEND_TIMEOUT};
use crate::serve::SharedState;
use crate::viewer::Viewer;

/// The connection slot a GraphQL WebSocket holds: of the unauthenticated kind
/// until `connection_init` brings a good token, then an ordinary one.
#[allow(dead_code)] // the permits are held, not read: dropping one frees its slot
pub enum Slot {
    Unauthenticated(OwnedSemaphorePermit),
    Authenticated(OwnedSemaphorePermit),
}

/// Who opened a connection, as its upgrade request says.
pub struct Caller {
    /// Without it, the token comes in `connection_init`.
    pub viewer: Option<Viewer>,
    pub client: ClientName,
}

/// Serves one upgraded connection until either side ends it.
pub async fn serve(
    state: SharedState,
    socket: WebSocket,
    schema: Schema,
    protocol: GraphQLProtocol,
    transport_ws: bool,
    caller: Caller,
    slot: Slot,
) {
    let Caller { viewer, client } = caller;
    // Held until the connection ends; `connection_init` may swap its kind.
    let slot = Arc::new(parking_lot::Mutex::new(slot));
    let init_slot = slot.clone();
    let _connection = state.metrics.connection("graphql");
    let authenticated = viewer.is_some();
    let (auth, auth_changes) = watch::channel(viewer.map_or(Auth::Pending, Auth::Valid));
    let mut data = Data::default();
    data.insert(state.clone());
    data.insert(LiveViewer::following(auth_changes.clone()));
    data.insert(client.clone());
    let limits = &state.experience.spec.api.limits;
    let budget = SubscriptionBudget::new(limits.max_subscriptions_per_connection as usize);
    data.insert(budget.clone());

    // async-graphql writes into a bounded channel; `write` owns the socket's sink,
    // so it alone decides when a stalled client or an expired token ends things.
    let (sink, stream) = socket.split();
    let (outgoing, to_send) = futures::channel::mpsc::channel::<Message>(256);
    let auth_on_init = auth.clone();
    let init_state = state.clone();
    let auth_on_ping = auth.clone();
    let ping_state = state.clone();
    let initialised = Arc::new(AtomicBool::new(false));
    let init_seen = initialised.clone();
    // Subscriptions the live core can answer alone are taken out of the stream
    // before async-graphql sees them (graphql-transport-ws only).
    let live = super::live::Live::new(
        state.clone(),
        LiveViewer::following(auth_changes.clone()),
        client,
        budget,
        outgoing.clone(),
        initialised.clone(),
        transport_ws,
    );
    let stream = stream.filter_map(move |message| {
        let live = live.clone();
        async move { live.intercept(message).await }
    });
    let graphql = GraphQLWebSocket::new_with_pair(outgoing, Box::pin(stream), schema, protocol)
        .with_data(data)
        .on_connection_init(move |payload| {
            on_init(
                init_state,
                auth_on_init,
                init_slot,
                init_seen,
                authenticated,
                payload,
            )
        })
        .on_ping(move |_, payload| on_ping(ping_state, auth_on_ping, payload))
        .serve();
    let writer = write(sink, to_send, auth_changes, initialised, state.live.clone());
    tokio::pin!(writer);
    tokio::select! {
        // async-graphql may end by queueing a close frame (a refused
        // connection_init, say): the writer gets a moment to send it.
        () = graphql => {
            let _ = tokio::time::timeout(Duration::from_secs(1), &mut writer).await;
        }
        () = &mut writer => {}
    }
    drop(slot);
}

/// `connection_init`: without a viewer from the upgrade, its payload must carry a
/// token, and the connection then takes an authenticated connection's slot.
async fn on_init(
    state: SharedState,
    auth: watch::Sender<Auth>,
    slot: Arc<parking_lot::Mutex<Slot>>,
    seen: Arc<AtomicBool>,
    authenticated: bool,
    payload: serde_json::Value,
) -> async_graphql::Result<Data> {
    seen.store(true, Ordering::SeqCst);
    if authenticated {
        return Ok(Data::default());
    }
    let viewer = viewer_from_payload(&state, &payload)
        .await
        .map_err(async_graphql::Error::new)?
        .ok_or_else(|| {
            async_graphql::Error::new("a bearer token is required in the connection_init payload")
        })?;
    let mut slot = slot.lock();
    if let Slot::Unauthenticated(_) = &*slot {
        let granted = state
            .connection_slot()
            .map_err(|e| async_graphql::Error::new(e.message))?;
        *slot = Slot::Authenticated(granted);
    }
    drop(slot);
    auth.send_replace(Auth::Valid(viewer));
    Ok(Data::default())
}

/// A `ping` may carry a fresh token (in-band refresh): `{"auth": "ok"}` in the
/// `pong` when it is taken; a refused one ends the connection.
async fn on_ping(
    state: SharedState,
    auth: watch::Sender<Auth>,
    payload: Option<serde_json::Value>,
) -> async_graphql::Result<Option<serde_json::Value>> {
    let payload = payload.unwrap_or_default();
    let fresh = viewer_from_payload(&state, &payload).await;
    let fresh = match (fresh, &*auth.borrow()) {
        (Ok(Some(fresh)), Auth::Valid(current)) => current.refreshed_by(fresh).map(Some),
        (fresh, _) => fresh,
    };
    Ok(match fresh {
        Ok(None) => None,
        Ok(Some(viewer)) => {
            auth.send_replace(Auth::Valid(viewer));
            Some(serde_json::json!({"auth": "ok"}))
        }
        Err(reason) => {
            auth.send_replace(Auth::Refused(reason));
            None
        }
    })
}

/// Sends what async-graphql produces, and closes the connection when the token
/// expires or is refused, when the client has not read for [`SEND_TIMEOUT`], or
/// when the server shuts down.
async fn write(
    mut sink: futures::stream::SplitSink<WebSocket, Message>,
    mut to_send: futures::channel::mpsc::Receiver<Message>,
    mut auth: watch::Receiver<Auth>,
    initialised: Arc<AtomicBool>,
    live: Arc<crate::live::Hub>,
) {
    let mut init_deadline = Some(tokio::time::Instant::now() + INIT_WITHIN);
    loop {
        let current = auth.borrow_and_update().clone();
        let expiry = match &current {
            Auth::Valid(viewer) => viewer.expires_in(),
            Auth::Pending => None,
            Auth::Refused(_) => Some(Duration::ZERO),
        };
        let message = tokio::select! {
            next = to_send.next() => match next {
                Some(message) => message,
                None => return,
            },
            () = tokio::time::sleep(expiry.unwrap_or(Duration::MAX)), if expiry.is_some() => {
                close(match current {
                    Auth::Refused(reason) => Close::TokenRefused(reason),
                    _ => Close::TokenExpired,
                })
            }
            Ok(()) = auth.changed() => continue,
            () = live.closed() => close(Close::ShuttingDown),
            () = tokio::time::sleep_until(init_deadline.unwrap_or_else(tokio::time::Instant::now)),
                if init_deadline.is_some() =>
            {
                init_deadline = None;
                if initialised.load(Ordering::SeqCst) {
                    continue;
                }
                close(Close::InitTimeout)
            }
        };
        // Whatever else is already queued goes out with it, in one flush.
        let mut last = matches!(message, Message::Close(_));
        let write = async {
            sink.feed(fit_close_reason(message)).await?;
            while !last {
                let Ok(more) = to_send.try_recv() else {
                    break;
                };
                last = matches!(more, Message::Close(_));
                sink.feed(fit_close_reason(more)).await?;
            }
            sink.flush().await
        };
        match tokio::time::timeout(SEND_TIMEOUT, write).await {
            Ok(Ok(())) if !last => {}
            Ok(_) => return,
            Err(_) => {
                let too_slow = close(Close::NotReading);
                let _ = tokio::time::timeout(Duration::from_secs(1), sink.send(too_slow)).await;
                return;
            }
        }
    }
}

/// async-graphql closes with its error text as the reason, which can be longer
/// than a close frame holds (123 bytes): a frame that long is a protocol error
/// the client would see instead of the code.
fn fit_close_reason(message: Message) -> Message {
    match message {
        Message::Close(Some(frame)) if frame.reason.len() > 120 => {
            Message::Close(Some(CloseFrame {
                code: frame.code,
                reason: Utf8Bytes::from(crate::live::close::truncate(frame.reason.to_string())),
            }))
        }
        other => other,
    }
}

fn close(close: Close) -> Message {
    Message::Close(Some(CloseFrame {
        code: close.code(),
        reason: Utf8Bytes::from(close.reason()),
    }))
}

/// The viewer for the token in a `connection_init` or `ping` payload:
/// `{"Authorization": "Bearer …"}` or `{"token": "…"}`. `None` when it has none.
async fn viewer_from_payload(
    state: &SharedState,
    payload: &serde_json::Value,
) -> Result<Option<Viewer>, String> {
    let authorization = ["Authorization", "authorization"]
        .iter()
        .find_map(|k| payload.get(*k).and_then(|v| v.as_str()));
    let token = match authorization {
        Some(value) => Some(
            value
                .strip_prefix("Bearer ")
                .or_else(|| value.strip_prefix("bearer "))
                .ok_or("Authorization must be `Bearer <token>`")?,
        ),
        None => payload.get("token").and_then(|v| v.as_str()),
    };
    let Some(token) = token else {
        return Ok(None);
    };
    state
        .viewer_for_token(token)
        .await
        .map(Some)
        .map_err(|e| e.message)
}
