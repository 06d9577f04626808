//! Facet's native WebSocket protocol at `/ws` (see docs/protocol.md): reads client
//! messages, writes what the connection's live session hands it.

use std::collections::BTreeMap;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{SinkExt, StreamExt};
use serde::Deserialize;

use super::access::Viewer;
use super::commands::{dispatch, Command};
use super::wire::native_json;
use super::{ApiError, SharedState};
use crate::command::{CommandError, Status};
use crate::live::close::{self, Close};
use crate::live::{Out, Selection, Session, SubscribeError, Update};
use crate::usage::Reader;

/// Each idle connection keeps a read buffer of this size: small, so that thousands
/// of connections cost little (tungstenite's default is 128 KiB, zeroed on reads).
pub const READ_BUFFER: usize = 4 * 1024;
/// Outgoing messages are written once this much is buffered, or at a flush.
pub const WRITE_BUFFER: usize = 8 * 1024;
const TRANSPORT: &str = "websocket";

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum ClientMessage {
    Subscribe {
        id: String,
        #[serde(flatten)]
        selection: Selection,
        /// Resume after this position instead of taking a snapshot.
        #[serde(default)]
        since: Option<String>,
    },
    Unsubscribe {
        id: String,
    },
    /// A fresh token, so the connection outlives the one it opened with.
    Auth {
        token: String,
    },
    Ping,
    /// A command; answered by an `ack` once produced, and another once visible.
    Command {
        id: String,
        name: String,
        input: serde_json::Value,
        #[serde(default, rename = "idempotencyKey")]
        idempotency_key: Option<String>,
    },
}

/// Acknowledgements of commands still waiting for their effect, as ready messages.
type Acks = FuturesUnordered<BoxFuture<'static, Utf8Bytes>>;

fn ack(id: &str, outcome: &crate::command::Outcome) -> Utf8Bytes {
    let mut message = serde_json::json!({"type": "ack", "id": id});
    if let (Some(target), Ok(serde_json::Value::Object(fields))) =
        (message.as_object_mut(), serde_json::to_value(outcome))
    {
        target.extend(fields);
    }
    message.to_string().into()
}

pub async fn upgrade(
    State(state): State<SharedState>,
    Query(query): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let viewer = state.viewer(&headers, &query).await?;
    let reader = state.reader(&headers, &viewer, None);
    let slot = state.connection_slot()?;
    let max = state.experience.spec.api.limits.max_message_bytes as usize;
    Ok(ws
        .max_message_size(max)
        // A frame is refused by its header, before any of it is buffered.
        .max_frame_size(max)
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .on_upgrade(move |socket| async move {
            run(state, viewer, reader, socket).await;
            drop(slot);
        }))
}

async fn run(state: SharedState, viewer: Viewer, reader: Reader, mut socket: WebSocket) {
    let _connection = state.metrics.connection(TRANSPORT);
    let mut session = Session::new(state.live.clone(), viewer, TRANSPORT).read_by(reader);
    let mut acks = Acks::new();
    let result = loop {
        tokio::select! {
            Some(ack) = acks.next(), if !acks.is_empty() => {
                // A command is visible only once its batch was published, so the
                // changes it made are queued here already: they go first, and a
                // client that waited for the ack finds them applied. (Drained
                // outright: the wake-up for them may have gone to the select's
                // dropped wait.)
                let sent = Box::pin(async {
                    let outs = session.drain().await?;
                    send(&mut socket, encode(&outs)).await?;
                    send(&mut socket, vec![ack]).await
                }).await;
                if let Err(close) = sent {
                    break Err(close);
                }
            }
            // The work after a wake-up is boxed: an idle connection then keeps only
            // the small waiting state, not room for the largest step (memory per
            // connection is what thousands of idle clients cost).
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Text(text))) => {
                    let handled = Box::pin(on_message(&state, &mut session, &mut socket, &mut acks, text.as_str()));
                    if let Err(close) = handled.await {
                        break Err(close);
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break Ok(()),
                Some(Ok(_)) => {}
            },
            waited = session.wait() => {
                if let Err(close) = Box::pin(deliver(&mut session, &mut socket, waited)).await {
                    break Err(close);
                }
            }
        }
    };
    if let Err(close) = result {
        let frame = CloseFrame {
            code: close.code(),
            reason: Utf8Bytes::from(close.reason()),
        };
        let _ = tokio::time::timeout(
            close::SEND_TIMEOUT,
            socket.send(Message::Close(Some(frame))),
        )
        .await;
    }
}

/// Sends what the session has queued once it woke with `waited`.
async fn deliver(
    session: &mut Session,
    socket: &mut WebSocket,
    waited: Result<(), Close>,
) -> Result<(), Close> {
    waited?;
    let outs = session.drain().await?;
    send(socket, encode(&outs)).await
}

/// Answers one client message; a refused token or a failed subscription closes
/// the connection.
async fn on_message(
    state: &SharedState,
    session: &mut Session,
    socket: &mut WebSocket,
    acks: &mut Acks,
    text: &str,
) -> Result<(), Close> {
    let message: ClientMessage = match serde_json::from_str(text) {
        Ok(message) => message,
        Err(e) => {
            let error =
                serde_json::json!({"type": "error", "message": format!("unreadable message: {e}")});
            return send(socket, vec![error.to_string().into()]).await;
        }
    };
    let replies = match message {
        ClientMessage::Subscribe {
            id,
            selection,
            since,
        } => subscribe(session, id, selection, since).await?,
        ClientMessage::Unsubscribe { id } => {
            session.unsubscribe(&id);
            Vec::new()
        }
        ClientMessage::Auth { token } => {
            refresh(state, session, &token).await?;
            vec![Utf8Bytes::from_static(r#"{"type":"auth_ok"}"#)]
        }
        ClientMessage::Ping => vec![Utf8Bytes::from_static(r#"{"type":"pong"}"#)],
        ClientMessage::Command {
            id,
            name,
            input,
            idempotency_key,
        } => {
            let command = Command {
                name,
                input,
                idempotency_key,
                wait: std::time::Duration::ZERO,
                traceparent: None,
            };
            vec![self::command(state, session.viewer(), acks, &id, command).await]
        }
    };
    send(socket, replies).await
}

/// A subscription's first updates, or the error that refused it.
async fn subscribe(
    session: &mut Session,
    id: String,
    selection: Selection,
    since: Option<String>,
) -> Result<Vec<Utf8Bytes>, Close> {
    match session.subscribe(&id, selection, since.as_deref()).await {
        Ok(updates) => {
            let id: std::sync::Arc<str> = id.into();
            let outs: Vec<Out> = updates
                .into_iter()
                .map(|update| Out {
                    id: id.clone(),
                    update,
                })
                .collect();
            Ok(encode(&outs))
        }
        Err(SubscribeError::Failed(close)) => Err(close),
        Err(e) => {
            let error = serde_json::json!({"type": "error", "id": id, "message": e.to_string()});
            Ok(vec![error.to_string().into()])
        }
    }
}

/// An in-band token refresh: the session judges by the new claims from now on.
async fn refresh(state: &SharedState, session: &mut Session, token: &str) -> Result<(), Close> {
    let refreshed = match state.viewer_for_token(token).await {
        Ok(fresh) => session.viewer().refreshed_by(fresh),
        Err(e) => Err(e.message),
    };
    session.set_viewer(refreshed.map_err(Close::TokenRefused)?);
    Ok(())
}

/// Sends a command and answers with its first `ack` (or the error); an accepted
/// command gets a second `ack` once its effect is visible.
async fn command(
    state: &SharedState,
    viewer: &Viewer,
    acks: &mut Acks,
    id: &str,
    command: Command,
) -> Utf8Bytes {
    let name = command.name.clone();
    let outcome = match dispatch(state, viewer, command).await {
        Ok(outcome) => outcome,
        Err(e) => {
            let mut error = serde_json::json!({"type": "error", "id": id, "code": e.code(), "message": e.to_string()});
            if let CommandError::Invalid {
                field: Some(field), ..
            } = &e
            {
                error["field"] = field.clone().into();
            }
            return error.to_string().into();
        }
    };
    if let (Status::Accepted, Some(commands)) = (outcome.status, state.commands.clone()) {
        let wait = state
            .experience
            .command(&name)
            .map_or(std::time::Duration::ZERO, |c| c.max_wait);
        let (id, command_id) = (id.to_string(), outcome.command_id.clone());
        acks.push(Box::pin(async move {
            ack(&id, &commands.follow(&command_id, wait).await)
        }));
    }
    ack(id, &outcome)
}

/// The messages of `outs`, in order.
fn encode(outs: &[Out]) -> Vec<Utf8Bytes> {
    outs.iter()
        .map(|out| match &out.update {
            // Every client with this subscription id gets the same bytes.
            Update::Change { op, change } => {
                let frame = change.frame(*op, &out.id, || native_json(Some(&out.id), &out.update));
                // Frames are JSON text; were one not, it is encoded again rather
                // than sent empty.
                Utf8Bytes::try_from(frame)
                    .unwrap_or_else(|_| native_json(Some(&out.id), &out.update).into())
            }
            update => native_json(Some(&out.id), update).into(),
        })
        .collect()
}

/// Writes messages and flushes once; a client that does not take them within
/// [`close::SEND_TIMEOUT`] is too slow to keep.
async fn send(socket: &mut WebSocket, texts: Vec<Utf8Bytes>) -> Result<(), Close> {
    if texts.is_empty() {
        return Ok(());
    }
    let write = async {
        for text in texts {
            socket.feed(Message::Text(text)).await?;
        }
        socket.flush().await
    };
    match tokio::time::timeout(close::SEND_TIMEOUT, write).await {
        Ok(Ok(())) => Ok(()),
        // The client is gone: nobody to tell why.
        Ok(Err(_)) => Err(Close::NotReading),
        Err(_) => Err(Close::NotReading),
    }
}
