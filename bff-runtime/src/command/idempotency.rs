//! Idempotency keys on one pod: one send per (user, key), whatever arrives at once.
//!
//! The command id of a keyed request is derived from the experience, command, user
//! and key, so it is the same on every replica and after a restart: a domain service
//! that remembers the ids it handled drops a retry that reached another pod. On one
//! pod, this memory also keeps a retry from producing at all: the first request with
//! a key produces, a concurrent one waits for that and follows the same command, a
//! later one follows it at once, and one whose input differs is refused.

use std::collections::{HashMap, VecDeque};

use parking_lot::Mutex;
use tokio::sync::watch;

/// How many keys a pod remembers (the oldest are forgotten first).
const REMEMBERED: usize = 10_000;

/// How far the first request with a key has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Producing,
    Produced,
    /// It did not produce (refused, Kafka unavailable, the caller went away): the
    /// key is free again.
    Failed,
}

/// What a request with a key does.
pub enum Claim<'k> {
    /// Produce; then call [`FirstSend::produced`] (dropping it frees the key).
    First(FirstSend<'k>),
    /// The command was produced by an earlier request: follow it.
    Produced,
    /// The key was used with another input.
    Conflict,
}

#[derive(Default)]
pub struct Keys {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    by_id: HashMap<String, Entry>,
    order: VecDeque<String>,
}

struct Entry {
    input: String,
    stage: watch::Receiver<Stage>,
}

impl Keys {
    /// Claims `command_id` for a request whose checked input has digest `input`,
    /// waiting while another request with the same key is producing.
    pub async fn claim(&self, command_id: &str, input: &str) -> Claim<'_> {
        loop {
            let mut stage = {
                let mut inner = self.inner.lock();
                match inner.by_id.get(command_id) {
                    Some(entry) if entry.input != input => return Claim::Conflict,
                    Some(entry) => entry.stage.clone(),
                    None => {
                        let (stage, receiver) = watch::channel(Stage::Producing);
                        inner.remember(command_id, input, receiver);
                        return Claim::First(FirstSend {
                            keys: self,
                            command_id: command_id.to_string(),
                            stage,
                        });
                    }
                }
            };
            // Produced, or failed and forgotten (the next turn claims it anew).
            let settled = stage.wait_for(|s| *s != Stage::Producing).await;
            if matches!(settled.as_deref(), Ok(Stage::Produced)) {
                return Claim::Produced;
            }
        }
    }

    fn forget(&self, command_id: &str) {
        let mut inner = self.inner.lock();
        inner.by_id.remove(command_id);
        inner.order.retain(|id| id != command_id);
    }
}

impl Inner {
    fn remember(&mut self, command_id: &str, input: &str, stage: watch::Receiver<Stage>) {
        let entry = Entry {
            input: input.to_string(),
            stage,
        };
        self.by_id.insert(command_id.to_string(), entry);
        self.order.push_back(command_id.to_string());
        while self.order.len() > REMEMBERED {
            if let Some(oldest) = self.order.pop_front() {
                self.by_id.remove(&oldest);
            }
        }
    }
}

/// The request that produces for its key.
pub struct FirstSend<'k> {
    keys: &'k Keys,
    command_id: String,
    stage: watch::Sender<Stage>,
}

impl FirstSend<'_> {
    /// The record is in Kafka: requests waiting on the key follow it.
    pub fn produced(self) {
        self.stage.send_replace(Stage::Produced);
    }
}

impl Drop for FirstSend<'_> {
    fn drop(&mut self) {
        if *self.stage.borrow() == Stage::Producing {
            self.keys.forget(&self.command_id);
            self.stage.send_replace(Stage::Failed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_request_per_key_produces_and_the_others_follow_it() {
        let keys = Keys::default();
        let Claim::First(first) = keys.claim("id-1", "input-a").await else {
            panic!("the first request produces");
        };
        // A concurrent duplicate waits until the first has produced.
        let duplicate = keys.claim("id-1", "input-a");
        tokio::pin!(duplicate);
        assert!(futures::poll!(&mut duplicate).is_pending());
        assert!(matches!(
            keys.claim("id-1", "input-b").await,
            Claim::Conflict
        ));
        first.produced();
        assert!(matches!(duplicate.await, Claim::Produced));
        assert!(matches!(
            keys.claim("id-1", "input-a").await,
            Claim::Produced
        ));
    }

    #[tokio::test]
    async fn a_first_request_that_does_not_produce_frees_its_key() {
        let keys = Keys::default();
        let Claim::First(first) = keys.claim("id-1", "input-a").await else {
            panic!("the first request produces");
        };
        let retry = keys.claim("id-1", "input-a");
        tokio::pin!(retry);
        assert!(futures::poll!(&mut retry).is_pending());
        drop(first); // refused, or Kafka was down
        assert!(
            matches!(retry.await, Claim::First(_)),
            "the key is free again"
        );
    }
}
