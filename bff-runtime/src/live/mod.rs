//! The live core: which clients a committed change goes to, and what each client's
//! subscriptions are sent, from the first snapshot to the close. The WebSocket, SSE
//! and GraphQL transports in `serve/` only encode what a [`Session`] hands them, so
//! they all behave the same on lag, resets, store errors and token expiry.
//!
//! - [`Router`]: the in-process change feed; files subscriptions by a value their
//!   rows must have, so a change reaches only the clients that may see it.
//! - [`Session`]: one client's subscriptions, snapshots, resumes and catch-ups; it
//!   counts its subscriptions and deliveries under its transport's label.
//! - [`stream::updates`]: a one-subscription session as a stream of [`stream::Item`].
//! - [`close::Close`]: every close code and reason.

mod access_edit;
pub mod change;
pub mod close;
mod outbox;
pub mod router;
pub mod selector;
pub mod session;
pub mod stream;

use std::sync::Arc;

use tokio::sync::{Semaphore, SemaphorePermit};

use crate::metrics::Metrics;
use crate::spec::CompiledExperience;
use crate::store::Store;

pub use change::{LiveChange, Op};
pub use close::Close;
pub use router::Router;
pub use selector::Selection;
pub use session::{Out, Session, SubscribeError, Update};

/// At most this many clients catch up from the store's change log at once, so a
/// load past capacity levels off instead of every lagging client decoding the log
/// at the same time.
const CONCURRENT_CATCH_UPS: usize = 2;

/// What every session works with: the store, the change feed and the limits
/// shared by all clients (not to be confused with `projection::Engine`, which
/// applies events).
pub struct Hub {
    pub experience: Arc<CompiledExperience>,
    pub store: Arc<Store>,
    pub router: Router,
    pub metrics: Arc<Metrics>,
    catch_ups: Semaphore,
    /// The experience as compiled with the access rules of an earlier digest, to
    /// judge what clients resuming from before an access edit were sent.
    access_shadows: parking_lot::Mutex<std::collections::HashMap<String, Arc<CompiledExperience>>>,
    /// Set once when the process shuts down: every session closes.
    closing: tokio::sync::watch::Sender<bool>,
}

impl Hub {
    pub fn new(
        experience: Arc<CompiledExperience>,
        store: Arc<Store>,
        router: Router,
        metrics: Arc<Metrics>,
    ) -> Arc<Hub> {
        Arc::new(Hub {
            experience,
            store,
            router,
            metrics,
            catch_ups: Semaphore::new(CONCURRENT_CATCH_UPS),
            access_shadows: Default::default(),
            closing: tokio::sync::watch::Sender::new(false),
        })
    }

    /// Ends every session with [`Close::ShuttingDown`], now and from now on.
    pub fn close_all(&self) {
        self.closing.send_replace(true);
    }

    /// Resolves once [`Hub::close_all`] was called.
    pub async fn closed(&self) {
        let mut closing = self.closing.subscribe();
        // An error means the sender is gone with the hub: nothing to wait for.
        let _ = closing.wait_for(|closing| *closing).await;
    }

    fn max_pending_rows(&self) -> usize {
        self.experience.spec.api.limits.max_pending_rows as usize
    }

    fn max_subscriptions(&self) -> usize {
        self.experience
            .spec
            .api
            .limits
            .max_subscriptions_per_connection as usize
    }

    async fn catch_up_slot(&self) -> Option<SemaphorePermit<'_>> {
        self.catch_ups.acquire().await.ok()
    }
}

/// One page of a list read (REST and GraphQL lists).
pub struct Page {
    /// The position the page was read at.
    pub position: String,
    pub rows: Vec<(String, crate::projection::Row)>,
    /// Where the next page starts (`after`), unless this one reached the end. A
    /// page may hold fewer rows than asked and still have a next: the scan's
    /// budget ran out.
    pub next: Option<String>,
}

impl Hub {
    /// Rows `viewer` sees in `selection`, in key order after `after`: read through
    /// the store's index when the filter or the access rule allows, and never cut
    /// before filtering. `None` when there is no such projection.
    pub fn page(
        &self,
        selection: &Selection,
        viewer: &crate::viewer::Viewer,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Option<Page>, crate::store::StoreError> {
        let Some(selector) = selector::Selector::new(&self.experience, selection, viewer) else {
            return Ok(None);
        };
        let view = self.store.view()?;
        let scan = self.visible_rows(&view, &selector, after, limit)?;
        Ok(Some(Page {
            position: self.store.codec().encode(&view.position()?),
            rows: scan.rows,
            next: scan.resume_after,
        }))
    }

    /// [`Hub::page`] off the async workers.
    pub async fn read_page(
        self: &Arc<Self>,
        selection: Selection,
        viewer: crate::viewer::Viewer,
        after: Option<String>,
        limit: usize,
    ) -> Result<Option<Page>, crate::store::StoreError> {
        self.off_the_workers(move |hub| hub.page(&selection, &viewer, after.as_deref(), limit))
            .await
    }

    /// Runs a store read on a blocking thread: reading and decoding rows (a page,
    /// a snapshot, a catch-up) must not hold up the connections that share an
    /// async worker. A panic in it goes on in the caller.
    pub(crate) async fn off_the_workers<T: Send + 'static>(
        self: &Arc<Self>,
        read: impl FnOnce(&Hub) -> T + Send + 'static,
    ) -> T {
        let hub = self.clone();
        tokio::task::spawn_blocking(move || read(&hub))
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
    }

    /// The rows a selector sees in one read, in key order after `after`, at most
    /// `limit`: its key's row, or the rows the store's index finds by a value they
    /// must have (else every row), filtered before the limit counts.
    fn visible_rows(
        &self,
        view: &crate::store::View<'_>,
        selector: &selector::Selector,
        after: Option<&str>,
        limit: usize,
    ) -> Result<crate::store::Scan, crate::store::StoreError> {
        let projection = &selector.projection().name;
        let found = |rows| crate::store::Scan {
            rows,
            resume_after: None,
            budget_spent: false,
        };
        if selector.sees_nothing() {
            return Ok(found(Vec::new()));
        }
        if let Some(key) = selector.key() {
            let row = view.row(projection, key)?;
            return Ok(found(
                row.filter(|row| after.is_none_or(|a| key > a) && selector.sees(key, row))
                    .map(|row| (key.to_string(), row))
                    .into_iter()
                    .collect(),
            ));
        }
        let lookup = selector.lookup(|f| self.store.is_indexed(projection, f));
        view.scan(projection, after, lookup, limit, |k, r| selector.sees(k, r))
    }
}
