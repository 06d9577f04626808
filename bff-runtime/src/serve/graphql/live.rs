//! Runs the graphql-transport-ws subscriptions that [`super::plan`] can
//! plan, beside async-graphql on the same connection: their `subscribe` and
//! `complete` messages are taken out of the incoming stream, and their `next`
//! messages go into the same outgoing queue, so the connection's writer (expiry,
//! stalled clients) governs them too.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;

use axum::extract::ws::Message;
use futures::channel::mpsc::Sender;
use futures::{SinkExt, StreamExt};

use super::admit::admit_payload;
use super::connection::{ClientName, LiveViewer, SubscriptionBudget};
use super::plan::{plan, Plan};
use crate::live::change::json_string;
use crate::live::stream::{updates, Item};
use crate::live::{Session, Update};
use crate::serve::SharedState;

type Running = Mutex<HashMap<String, tokio::task::AbortHandle>>;

/// The planned subscriptions of one connection; dropped with the connection, it
/// stops them all.
struct Tasks(Arc<Running>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for (_, task) in self.0.lock().drain() {
            task.abort();
        }
    }
}

#[derive(Clone)]
pub struct Live {
    state: SharedState,
    viewer: LiveViewer,
    client: ClientName,
    budget: SubscriptionBudget,
    outgoing: Sender<Message>,
    initialised: Arc<AtomicBool>,
    enabled: bool,
    tasks: Arc<Tasks>,
}

impl Live {
    pub fn new(
        state: SharedState,
        viewer: LiveViewer,
        client: ClientName,
        budget: SubscriptionBudget,
        outgoing: Sender<Message>,
        initialised: Arc<AtomicBool>,
        enabled: bool,
    ) -> Live {
        Live {
            state,
            viewer,
            client,
            budget,
            outgoing,
            initialised,
            enabled,
            tasks: Arc::new(Tasks(Arc::default())),
        }
    }

    /// Takes a client message that is ours (`None`), or passes it on.
    pub async fn intercept(
        &self,
        message: Result<Message, axum::Error>,
    ) -> Option<Result<Message, axum::Error>> {
        let Ok(Message::Text(text)) = &message else {
            return Some(message);
        };
        // Before `connection_init`, async-graphql refuses operations itself.
        if !self.initialised.load(Ordering::SeqCst) {
            return Some(message);
        }
        let Ok(mut parsed) = serde_json::from_str::<serde_json::Value>(text.as_str()) else {
            return Some(message);
        };
        let id = parsed["id"].as_str().unwrap_or_default().to_string();
        let kind = parsed["type"].as_str().unwrap_or_default().to_string();
        let mut message = message;
        // Every operation, ours or async-graphql's, on either protocol, is admitted first.
        if kind == "subscribe" || kind == "start" {
            match admit_payload(&self.state.experience, &parsed["payload"]) {
                Ok(None) => {}
                Ok(Some(payload)) => {
                    parsed["payload"] = payload;
                    message = Ok(Message::Text(parsed.to_string().into()));
                }
                Err(refused) => {
                    self.refuse(&id, refused).await;
                    return None;
                }
            }
        }
        if !self.enabled {
            return Some(message);
        }
        match kind.as_str() {
            "complete" => {
                let task = self.tasks.0.lock().remove(&id);
                match task {
                    Some(task) => {
                        task.abort();
                        None
                    }
                    None => Some(message),
                }
            }
            "subscribe" => {
                let Some(plan) = plan(&self.state.experience, &parsed["payload"]) else {
                    return Some(message);
                };
                if self.viewer.current().is_none() || !self.start(id, plan) {
                    return Some(message);
                }
                None
            }
            _ => Some(message),
        }
    }

    /// Answers a refused operation with the protocol's `error` message: a list of
    /// errors on graphql-transport-ws, one error on the older graphql-ws.
    async fn refuse(&self, id: &str, refused: async_graphql::ServerError) {
        let error = serde_json::to_value(&refused).unwrap_or_default();
        let payload = match self.enabled {
            true => serde_json::json!([error]),
            false => error,
        };
        let message = serde_json::json!({"type": "error", "id": id, "payload": payload});
        let _ = self
            .outgoing
            .clone()
            .send(Message::Text(message.to_string().into()))
            .await;
    }

    /// Starts a planned subscription; `false` leaves it to async-graphql.
    fn start(&self, id: String, plan: Plan) -> bool {
        let mut tasks = self.tasks.0.lock();
        if tasks.contains_key(&id) {
            return false; // async-graphql answers a duplicate id as the protocol says
        }
        let run = Subscription {
            state: self.state.clone(),
            viewer: self.viewer.clone(),
            client: self.client.clone(),
            budget: self.budget.clone(),
            outgoing: self.outgoing.clone(),
            id_json: json_string(&id),
            plan,
            tasks: Arc::downgrade(&self.tasks.0),
            id: id.clone(),
        };
        self.state.metrics.graphql_planned.inc();
        let task = tokio::spawn(run.run());
        tasks.insert(id, task.abort_handle());
        true
    }
}

struct Subscription {
    state: SharedState,
    viewer: LiveViewer,
    client: ClientName,
    budget: SubscriptionBudget,
    outgoing: Sender<Message>,
    id: String,
    id_json: String,
    plan: Plan,
    tasks: Weak<Running>,
}

impl Subscription {
    async fn run(mut self) {
        if let Err(message) = self.serve().await {
            let payload = serde_json::json!({"data": null, "errors": [message]}).to_string();
            let _ = self.send(&payload).await;
        }
        let complete = format!(r#"{{"id":{},"type":"complete"}}"#, self.id_json);
        let _ = self.outgoing.send(Message::Text(complete.into())).await;
        if let Some(tasks) = self.tasks.upgrade() {
            tasks.lock().remove(&self.id);
        }
    }

    /// Streams the subscription until the client goes or the server ends it (an
    /// error object for the client).
    async fn serve(&mut self) -> Result<(), serde_json::Value> {
        let error = |message: String| serde_json::json!({"message": message});
        let _permit = self.budget.take().map_err(|e| error(e.message))?;
        let viewer = self
            .viewer
            .current()
            .ok_or_else(|| error("not authenticated".into()))?;
        let reader = self
            .client
            .reader(&self.state, &viewer, self.plan.operation.as_deref());
        let mut session =
            Session::new(self.state.live.clone(), viewer, super::TRANSPORT).read_by(reader);
        let turn = self.budget.first_updates_turn().await;
        let first = session
            .subscribe(
                super::TRANSPORT,
                self.plan.selection.clone(),
                self.plan.since.as_deref(),
            )
            .await
            .map_err(|e| error(e.to_string()))?;
        let mut items = std::pin::pin!(updates(session, first, self.viewer.refreshes(), turn));
        while let Some(item) = items.next().await {
            let update = match item {
                Item::Update(update) => update,
                Item::Closed(close) => {
                    return Err(
                        serde_json::json!({"message": close.reason(), "extensions": {"code": close.code()}}),
                    )
                }
            };
            for payload in self.payloads(&update) {
                self.send(&payload)
                    .await
                    .map_err(|()| error("gone".into()))?;
            }
        }
        Ok(())
    }

    /// What one update sends: a change's payload is encoded once for every
    /// client with this plan.
    fn payloads(&self, update: &Update) -> Vec<String> {
        let Update::Change { op, change } = update else {
            return self.plan.payloads(update);
        };
        let frame = change.frame(*op, &self.plan.shape, || {
            self.plan.payloads(update).remove(0)
        });
        // Frames are JSON text; were one not, it is encoded again.
        match std::str::from_utf8(&frame) {
            Ok(text) => vec![text.to_string()],
            Err(_) => self.plan.payloads(update),
        }
    }

    async fn send(&mut self, payload: &str) -> Result<(), ()> {
        let text = format!(
            r#"{{"id":{},"type":"next","payload":{payload}}}"#,
            self.id_json
        );
        self.outgoing
            .send(Message::Text(text.into()))
            .await
            .map_err(|_| ())
    }
}
