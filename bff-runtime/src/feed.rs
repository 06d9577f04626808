//! The in-process change feed: every committed change, in commit order, to every
//! subscriber (WebSocket, GraphQL and SSE connections, the console).

use std::sync::Arc;

use tokio::sync::broadcast;

use crate::store::Change;

/// A subscriber that falls this far behind the feed stops receiving it and must
/// catch up from the store's change log (the feed never waits for a slow reader).
const FEED_CAPACITY: usize = 4096;

#[derive(Clone)]
pub struct Feed {
    sender: broadcast::Sender<Arc<Change>>,
}

impl Default for Feed {
    fn default() -> Self {
        Feed::new()
    }
}

impl Feed {
    pub fn new() -> Self {
        let (sender, _) = broadcast::channel(FEED_CAPACITY);
        Feed { sender }
    }

    /// Publishes changes that the store has committed.
    pub fn publish(&self, changes: Vec<Change>) {
        for change in changes {
            // No subscriber is not an error: nobody is watching yet.
            let _ = self.sender.send(Arc::new(change));
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Change>> {
        self.sender.subscribe()
    }
}
