//! What every GraphQL operation of one connection shares: who the viewer is now
//! (a token refreshed in-band replaces it; an expired or refused one ends the
//! connection), and the budget that lets one subscription at a time take its first
//! updates. Used by the resolvers, the mutations, the live subscriptions and the
//! WebSocket transport, which otherwise know nothing of each other.

use std::sync::Arc;

use futures::stream::{BoxStream, StreamExt};

use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use crate::viewer::Viewer;

/// The client a GraphQL request or connection names itself by (the
/// `graphql-client-name` header), for field usage.
#[derive(Clone, Default)]
pub struct ClientName(pub Option<String>);

impl ClientName {
    pub fn of(headers: &axum::http::HeaderMap) -> ClientName {
        let named = headers
            .get(crate::usage::CLIENT_HEADER)
            .and_then(|v| v.to_str().ok());
        ClientName(named.map(str::to_string))
    }

    /// Whom an operation's reads count for: this name, else the token's client.
    pub fn reader(
        &self,
        state: &crate::serve::AppState,
        viewer: &Viewer,
        operation: Option<&str>,
    ) -> crate::usage::Reader {
        let client = self.0.as_deref().or(viewer.client());
        state.metrics.usage.reader(client, operation)
    }
}

/// Where a connection's authentication stands.
#[derive(Debug, Clone)]
pub enum Auth {
    /// Waiting for the token in the `connection_init` payload.
    Pending,
    Valid(Viewer),
    /// A token sent in-band was refused: the connection closes with this reason.
    Refused(String),
}

/// The viewer of a request or connection, as resolvers see it. On a WebSocket it
/// follows in-band token refreshes, so running subscriptions apply the new claims.
#[derive(Clone)]
pub struct LiveViewer(watch::Receiver<Auth>);

impl LiveViewer {
    /// The viewer of a connection, following what its authentication becomes.
    pub(super) fn following(auth: watch::Receiver<Auth>) -> Self {
        LiveViewer(auth)
    }

    /// A viewer that never changes (one HTTP request).
    pub fn fixed(viewer: Viewer) -> Self {
        LiveViewer(watch::channel(Auth::Valid(viewer)).1)
    }

    pub fn current(&self) -> Option<Viewer> {
        match &*self.0.borrow() {
            Auth::Valid(viewer) => Some(viewer.clone()),
            Auth::Pending | Auth::Refused(_) => None,
        }
    }

    /// Waits for a fresh token and gives its viewer (never returns on a fixed one).
    pub async fn next_refresh(&mut self) -> Option<Viewer> {
        if self.0.changed().await.is_err() {
            return std::future::pending().await;
        }
        match &*self.0.borrow_and_update() {
            Auth::Valid(viewer) => Some(viewer.clone()),
            Auth::Pending | Auth::Refused(_) => None,
        }
    }

    /// Every fresh viewer from now on, for a subscription's session to follow.
    pub fn refreshes(&self) -> BoxStream<'static, Viewer> {
        futures::stream::unfold(self.clone(), |mut viewer| async move {
            loop {
                if let Some(fresh) = viewer.next_refresh().await {
                    return Some((fresh, viewer));
                }
            }
        })
        .boxed()
    }
}

/// A connection's `maxSubscriptionsPerConnection`, shared by its subscriptions.
#[derive(Clone)]
pub struct SubscriptionBudget {
    slots: Arc<Semaphore>,
    limit: usize,
    /// One subscription at a time reads and sends its first updates.
    first_updates: Arc<Semaphore>,
}

impl SubscriptionBudget {
    pub(super) fn new(limit: usize) -> Self {
        SubscriptionBudget {
            slots: Arc::new(Semaphore::new(limit)),
            limit,
            first_updates: Arc::new(Semaphore::new(1)),
        }
    }

    /// The subscriptions of one connection take their first updates (a snapshot,
    /// or what a resume missed) one at a time, each holding the turn until its
    /// rows are sent: a client that subscribes a hundred times and never reads
    /// holds one snapshot, not a hundred, until it is closed as too slow.
    pub async fn first_updates_turn(&self) -> OwnedSemaphorePermit {
        self.first_updates
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed")
    }

    /// One subscription's share, given back when the subscription ends.
    pub fn take(&self) -> async_graphql::Result<OwnedSemaphorePermit> {
        self.slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| format!("at most {} subscriptions per connection", self.limit).into())
    }
}
