//! A session that serves one subscription, as a stream: its first updates, then
//! every update as it comes, then, when the server ends it, why. SSE and both
//! GraphQL subscription paths only map each [`Item`] to their encoding. (The native
//! WebSocket, whose client subscribes and unsubscribes as it goes, waits on its
//! session beside its socket instead.)

use std::collections::VecDeque;

use futures::stream::{BoxStream, Stream, StreamExt};

use super::close::Close;
use super::session::{Session, Update};
use crate::viewer::Viewer;

/// What a subscription's stream yields, in order.
pub enum Item {
    Update(Update),
    /// The last item: the server ended the subscription.
    Closed(Close),
}

/// The stream of `session`, which has just subscribed and got `first`.
/// `refreshes` are the client's fresh viewers (tokens refreshed in band), applied
/// as they come; `first_turn` is held until the first updates are all taken, every
/// page of a snapshot included (a connection's subscriptions take their first
/// updates one at a time).
pub fn updates<T: Send + 'static>(
    session: Session,
    first: Vec<Update>,
    refreshes: BoxStream<'static, Viewer>,
    first_turn: T,
) -> impl Stream<Item = Item> + Send + 'static {
    let state = State {
        session,
        queue: first.into(),
        refreshes,
        first_turn: Some(first_turn),
        ended: false,
    };
    futures::stream::unfold(state, |mut s| async move {
        let item = s.next().await?;
        Some((item, s))
    })
}

struct State<T> {
    session: Session,
    queue: VecDeque<Update>,
    refreshes: BoxStream<'static, Viewer>,
    first_turn: Option<T>,
    ended: bool,
}

impl<T> State<T> {
    async fn next(&mut self) -> Option<Item> {
        loop {
            if let Some(update) = self.queue.pop_front() {
                return Some(Item::Update(update));
            }
            if !self.session.is_paging() {
                self.first_turn = None;
            }
            if self.ended {
                return None;
            }
            // Only the wait is raced with a refresh: it is cancel-safe, a drain
            // (which may read the store) is not.
            let waited = tokio::select! {
                waited = self.session.wait() => waited,
                Some(viewer) = self.refreshes.next() => {
                    self.session.set_viewer(viewer);
                    continue;
                }
            };
            match waited {
                Ok(()) => match self.session.drain().await {
                    Ok(outs) => self.queue.extend(outs.into_iter().map(|out| out.update)),
                    Err(close) => return Some(self.end(close)),
                },
                Err(close) => return Some(self.end(close)),
            }
        }
    }

    fn end(&mut self, close: Close) -> Item {
        self.ended = true;
        Item::Closed(close)
    }
}
