//! Read-your-writes: which commands' effects the store already shows. A domain
//! service that copies a command's `facet-command-id` header into the events it
//! emits lets ingest tell, after the batch with such an event commits, that the
//! command is visible, and at which position a client reads it.

use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};

use tokio::sync::oneshot;

/// The header that carries a command's id, on the command and on its effects.
pub const COMMAND_ID_HEADER: &str = "facet-command-id";

/// How many recently visible commands are remembered, for a caller that asks
/// after the effect has already been applied (a retry, a slow producer ack).
const REMEMBERED: usize = 10_000;

#[derive(Default)]
pub struct Correlations {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    waiting: HashMap<String, Vec<oneshot::Sender<String>>>,
    /// Command id → the position that first showed its effect, oldest first.
    visible: HashMap<String, String>,
    order: VecDeque<String>,
}

impl Correlations {
    /// The position at which `command_id`'s effect became visible, if it has.
    pub fn position(&self, command_id: &str) -> Option<String> {
        let state = self.state.lock();
        state.visible.get(command_id).cloned()
    }

    /// The position at which `command_id`'s effect is visible, if it already is;
    /// otherwise a receiver that gets it when it becomes visible.
    pub fn watch(&self, command_id: &str) -> Result<String, oneshot::Receiver<String>> {
        let mut state = self.state.lock();
        if let Some(position) = state.visible.get(command_id) {
            return Ok(position.clone());
        }
        let (send, receive) = oneshot::channel();
        state
            .waiting
            .entry(command_id.to_string())
            .or_default()
            .push(send);
        Err(receive)
    }

    /// Called by ingest after a batch commits: these commands' effects are
    /// visible at `position`.
    pub fn visible(&self, command_ids: Vec<String>, position: &str) {
        if command_ids.is_empty() {
            return;
        }
        let mut state = self.state.lock();
        for id in command_ids {
            if state.visible.contains_key(&id) {
                continue;
            }
            for waiter in state.waiting.remove(&id).unwrap_or_default() {
                let _ = waiter.send(position.to_string());
            }
            state.visible.insert(id.clone(), position.to_string());
            state.order.push_back(id);
            if state.order.len() > REMEMBERED {
                if let Some(oldest) = state.order.pop_front() {
                    state.visible.remove(&oldest);
                }
            }
        }
    }

    /// Forgets the waiters of a caller that stopped waiting.
    pub fn forget_closed(&self, command_id: &str) {
        let mut state = self.state.lock();
        if let Some(waiters) = state.waiting.get_mut(command_id) {
            waiters.retain(|w| !w.is_closed());
            if waiters.is_empty() {
                state.waiting.remove(command_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_waiter_learns_the_position_and_a_late_caller_finds_it() {
        let correlations = Correlations::default();
        let waiting = correlations.watch("c-1").unwrap_err();
        correlations.visible(vec!["c-1".into(), "c-2".into()], "p~t.0.5");
        assert_eq!(waiting.await.unwrap(), "p~t.0.5");
        assert_eq!(correlations.position("c-2").as_deref(), Some("p~t.0.5"));
        // The first position that showed it stays.
        correlations.visible(vec!["c-2".into()], "p~t.0.9");
        assert_eq!(correlations.watch("c-2").ok().as_deref(), Some("p~t.0.5"));
    }
}
