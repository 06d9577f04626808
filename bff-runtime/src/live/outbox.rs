//! What the router has for one connection and the connection has not sent yet.
//!
//! The router never waits for a client: it appends and moves on. A client that
//! lets more than `maxPendingRows` deliveries pile up loses the queue and is marked
//! behind; its session then catches up from the store's change log (one message per
//! row, latest wins) or, if even that is too much, closes it so it resumes later.

use std::collections::VecDeque;
use std::sync::Arc;

use parking_lot::Mutex;

use tokio::sync::Notify;

use super::change::{LiveChange, Op};

/// One change for one subscription of a connection.
pub struct Delivery {
    /// The subscription, numbered by its session.
    pub sub: u32,
    pub op: Op,
    pub change: Arc<LiveChange>,
}

#[derive(Default)]
struct Queue {
    items: VecDeque<Delivery>,
    /// Deliveries were dropped since the last [`Outbox::take`].
    overflowed: bool,
}

pub struct Outbox {
    queue: Mutex<Queue>,
    ready: Notify,
    limit: usize,
}

impl Outbox {
    pub fn new(limit: usize) -> Arc<Outbox> {
        Arc::new(Outbox {
            queue: Mutex::new(Queue::default()),
            ready: Notify::new(),
            limit: limit.max(1),
        })
    }

    pub fn push(&self, delivery: Delivery) {
        {
            let mut queue = self.queue.lock();
            if queue.items.len() >= self.limit {
                queue.items = VecDeque::new();
                queue.overflowed = true;
            }
            queue.items.push_back(delivery);
        }
        self.ready.notify_one();
    }

    /// Everything queued, and whether some was dropped before it.
    pub fn take(&self) -> (Vec<Delivery>, bool) {
        let mut queue = self.queue.lock();
        let overflowed = std::mem::take(&mut queue.overflowed);
        let items = std::mem::take(&mut queue.items);
        (items.into(), overflowed)
    }

    /// Waits until something is pushed (returns at once if something was pushed
    /// since the last wait).
    pub async fn pushed(&self) {
        self.ready.notified().await
    }

    /// Wakes the waiting session, e.g. to look at its subscriptions again.
    pub fn wake(&self) {
        self.ready.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(n: u32) -> Delivery {
        Delivery {
            sub: n,
            op: Op::Upsert,
            change: Arc::new(LiveChange::catch_up("p", "k".into(), None, String::new())),
        }
    }

    #[test]
    fn a_full_outbox_drops_its_queue_and_says_so() {
        let outbox = Outbox::new(3);
        for n in 0..3 {
            outbox.push(delivery(n));
        }
        let (items, overflowed) = outbox.take();
        assert_eq!((items.len(), overflowed), (3, false));
        for n in 0..5 {
            outbox.push(delivery(n));
        }
        let (items, overflowed) = outbox.take();
        assert!(overflowed);
        assert_eq!(items.iter().map(|d| d.sub).collect::<Vec<_>>(), [3, 4]);
        assert!(!outbox.take().1, "reported once");
    }
}
