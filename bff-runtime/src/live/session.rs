//! One client's live subscriptions, whatever the transport: subscribe → snapshot
//! or resume → changes → catch-up → reset → close. Transports only encode what a
//! session hands them.
//!
//! No gap, no duplicate: a subscription is registered with the router *before* its
//! first read of the store, and every change committed up to that read (which the
//! read already reflects) is dropped when it arrives. While a large snapshot is
//! sent in pages ([`snapshot`]), the subscription's changes are dropped as they
//! come: the catch-up after its last page sends them.

mod snapshot;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use super::access_edit::{access_diff, Before};
use super::change::{LiveChange, Op};
use super::close::Close;
use super::outbox::Outbox;
use super::router::Registration;
use super::selector::{Selection, Selector};
use super::Hub;
use crate::projection::Row;
use crate::store::{access_of, with_access, Change, Missed, PositionError, View};
use crate::usage::{Reader, Tally};
use crate::viewer::Viewer;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

pub use snapshot::SNAPSHOT_PAGE;

/// Most rows an access edit's resume compares before it sends a fresh snapshot.
const ACCESS_COMPARE_LIMIT: usize = 10_000;
/// How long a resume waits for this replica to reach a client's position (it may
/// have come from a replica that is a little further on).
const RESUME_WAIT: Duration = Duration::from_secs(5);
/// How often a session adds what it delivered to the field usage counters.
const USAGE_FLUSH_EVERY: Duration = Duration::from_secs(1);

/// What a subscription sends, in order.
pub enum Update {
    /// Visible rows at `position`, in key order: all of them, or with `more` one
    /// page, which the next pages follow. The position is one to resume from only
    /// with the last page.
    Snapshot {
        position: String,
        rows: Vec<(String, Row)>,
        more: bool,
    },
    /// A row changed; its position is the change's.
    Change { op: Op, change: Arc<LiveChange> },
    /// The client's position cannot be resumed here; a snapshot follows.
    Reset { reason: String },
}

/// One update for one subscription.
pub struct Out {
    pub id: Arc<str>,
    pub update: Update,
}

#[derive(Debug, thiserror::Error)]
pub enum SubscribeError {
    #[error("no projection named `{0}`")]
    UnknownProjection(String),
    #[error("at most {0} subscriptions per connection")]
    TooMany(usize),
    #[error(transparent)]
    BadPosition(PositionError),
    #[error(
        "finding the rows that match reads more than {} rows or takes over {} s: \
         narrow the subscription with key, or where on a field the access rule indexes",
        crate::store::SCAN_MAX_ROWS,
        crate::store::SCAN_MAX_TIME.as_secs()
    )]
    ScanTooLong,
    #[error("{}", .0.reason())]
    Failed(Close),
}

struct Sub {
    id: Arc<str>,
    selection: Selection,
    selector: Arc<Selector>,
    _registration: Registration,
    /// Changes up to this commit are reflected in what the client has.
    seen_through: u64,
    /// The last position the client was given.
    position: String,
    /// The pages of its snapshot still to send.
    paging: Option<snapshot::Paging>,
    /// Its fields' usage counters.
    tally: Tally,
    /// How old the changes it is handed are (`facet_delivery_latency_seconds`).
    freshness: Histogram,
}

pub struct Session {
    hub: Arc<Hub>,
    viewer: Viewer,
    /// The transport's label on the session's metrics.
    transport: &'static str,
    /// `facet_subscriptions{transport}`, kept equal to the session's subscriptions.
    subscriptions: Gauge,
    /// `facet_deliveries{transport}`: the changes the session handed on.
    deliveries: Counter,
    outbox: Arc<Outbox>,
    /// (number, subscription): a connection has few, and a list costs less per
    /// idle connection than maps.
    subs: Vec<(u32, Sub)>,
    next_sub: u32,
    /// Whom field usage counts what the session sends for.
    reader: Reader,
    /// When the subscriptions' usage tallies were last flushed.
    usage_flushed: std::time::Instant,
}

impl Session {
    /// A session of `transport` (its label on the metrics the session keeps: live
    /// subscriptions, deliveries and their latency).
    pub fn new(hub: Arc<Hub>, viewer: Viewer, transport: &'static str) -> Session {
        let outbox = Outbox::new(hub.max_pending_rows());
        let subscriptions = hub.metrics.subscriptions_of(transport);
        let deliveries = hub.metrics.deliveries_of(transport);
        let reader = hub.metrics.usage.reader(viewer.client(), None);
        Session {
            hub,
            viewer,
            transport,
            subscriptions,
            deliveries,
            outbox,
            subs: Vec::new(),
            next_sub: 0,
            reader,
            usage_flushed: std::time::Instant::now(),
        }
    }

    /// The session with its reads counted for `reader` (by default the token's
    /// client, with no operation).
    pub fn read_by(mut self, reader: Reader) -> Session {
        self.reader = reader;
        self
    }

    pub fn len(&self) -> usize {
        self.subs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.subs.is_empty()
    }

    /// Whether a snapshot still has pages to send.
    pub fn is_paging(&self) -> bool {
        self.subs.iter().any(|(_, sub)| sub.paging.is_some())
    }

    /// Starts (or restarts) subscription `id`: its first updates are a snapshot,
    /// or with `since` what the client missed (or a reset and a snapshot).
    pub async fn subscribe(
        &mut self,
        id: &str,
        selection: Selection,
        since: Option<&str>,
    ) -> Result<Vec<Update>, SubscribeError> {
        let limit = self.hub.max_subscriptions();
        if self.subs.len() >= limit && !self.subs.iter().any(|(_, s)| &*s.id == id) {
            return Err(SubscribeError::TooMany(limit));
        }
        let since = match since.map(|s| (s, self.hub.store.codec().decode(s))) {
            None => None,
            Some((text, Ok(position))) => {
                match self.hub.before(access_of(text), &selection, &self.viewer) {
                    Before::Same => Some(Ok((position, None))),
                    Before::Was(before) => Some(Ok((
                        position,
                        Some(AccessEdit {
                            before,
                            since: text.to_string(),
                        }),
                    ))),
                    Before::Unknown => Some(Err(
                        "the access rules changed since that position, to rules this replica has not run with: here is a fresh snapshot",
                    )),
                }
            }
            Some((_, Err(PositionError::OtherEpoch))) => Some(Err(
                "the projections were rebuilt since that position: here is a fresh snapshot",
            )),
            Some((_, Err(e))) => return Err(SubscribeError::BadPosition(e)),
        };
        let selector = Arc::new(
            Selector::new(&self.hub.experience, &selection, &self.viewer)
                .ok_or_else(|| SubscribeError::UnknownProjection(selection.projection.clone()))?,
        );
        self.unsubscribe(id);
        let number = self.next_sub;
        self.next_sub += 1;
        let registration = self.hub.router.register(
            selector.clone(),
            selection.delta,
            self.outbox.clone(),
            number,
        );
        let tally = self.tally(&selector, &selection);
        let freshness = self
            .hub
            .metrics
            .delivery_latency_of(self.transport, &selector.projection().name);
        let mut sub = Sub {
            id: Arc::from(id),
            selection,
            selector,
            _registration: registration,
            seen_through: 0,
            position: String::new(),
            paging: None,
            tally,
            freshness,
        };
        let updates = match since {
            Some(Ok((position, edit))) => self.hub.resume(&mut sub, &position, edit).await?,
            Some(Err(reason)) => {
                let mut updates = vec![Update::Reset {
                    reason: reason.into(),
                }];
                updates.push(self.hub.snapshot(&mut sub).await?);
                updates
            }
            None => vec![self.hub.snapshot(&mut sub).await?],
        };
        self.deliveries.inc_by(sub.count(&updates));
        self.subs.push((number, sub));
        self.subscriptions.inc();
        Ok(updates)
    }

    /// The usage counters of the fields a subscription is sent.
    fn tally(&self, selector: &Selector, selection: &Selection) -> Tally {
        let projection = selector.projection();
        let fields = selection.fields.as_deref();
        let usage = &self.hub.metrics.usage;
        usage.selection_tally(projection, fields, &self.reader)
    }

    pub fn unsubscribe(&mut self, id: &str) -> bool {
        let before = self.subs.len();
        self.subs.retain(|(_, s)| &*s.id != id);
        let removed = before - self.subs.len();
        self.subscriptions.dec_by(removed as i64);
        removed > 0
    }

    /// Whom the session serves.
    pub fn viewer(&self) -> &Viewer {
        &self.viewer
    }

    /// A refreshed token: what the client may see is judged by its new claims from
    /// now on.
    pub fn set_viewer(&mut self, viewer: Viewer) {
        self.viewer = viewer;
        for (number, sub) in self.subs.iter_mut() {
            let Some(selector) = Selector::new(&self.hub.experience, &sub.selection, &self.viewer)
            else {
                continue;
            };
            let selector = Arc::new(selector);
            // Registered anew before the old one goes: a change routed to both
            // arrives twice and the second is dropped by its commit number.
            let registration = self.hub.router.register(
                selector.clone(),
                sub.selection.delta,
                self.outbox.clone(),
                *number,
            );
            sub.selector = selector;
            sub._registration = registration;
        }
    }

    /// Waits until there is something to [`Session::drain`] (a change, or the
    /// next page of a snapshot), the token expires, or the server shuts down.
    /// Cancel-safe, so a transport can wait on its socket at the same time.
    pub async fn wait(&self) -> Result<(), Close> {
        let left = self.viewer.expires_in();
        if left.is_some_and(|left| left.is_zero()) {
            return Err(Close::TokenExpired);
        }
        let expiry = async {
            match left {
                Some(left) => tokio::time::sleep(left).await,
                None => std::future::pending().await,
            }
        };
        // Deliveries not yet in the usage counters get there a second after the
        // last flush, even if nothing else comes (the drain then flushes).
        let usage_due = self
            .subs
            .iter()
            .any(|(_, sub)| sub.tally.is_pending())
            .then(|| self.usage_flushed + USAGE_FLUSH_EVERY);
        let flush = async {
            match usage_due {
                Some(due) => tokio::time::sleep_until(due.into()).await,
                None => std::future::pending().await,
            }
        };
        let paging = self.is_paging();
        tokio::select! {
            biased;
            () = self.hub.closed() => Err(Close::ShuttingDown),
            () = expiry => Err(Close::TokenExpired),
            () = std::future::ready(()), if paging => Ok(()),
            () = self.outbox.pushed() => Ok(()),
            () = flush => Ok(()),
        }
    }

    /// Waits for the next updates: [`Session::wait`], then [`Session::drain`].
    pub async fn next(&mut self) -> Result<Vec<Out>, Close> {
        self.wait().await?;
        self.drain().await
    }

    /// The updates due now, in order, and the next page of a snapshot being paged.
    /// A client that fell too far behind catches up from the store's change log,
    /// or is closed when even that is too much.
    pub async fn drain(&mut self) -> Result<Vec<Out>, Close> {
        let (deliveries, overflowed) = self.outbox.take();
        let mut out = Vec::new();
        if overflowed {
            out = self.catch_up().await?;
        }
        let mut delivered = 0;
        for delivery in deliveries {
            let Some((_, sub)) = self.subs.iter_mut().find(|(n, _)| *n == delivery.sub) else {
                continue; // unsubscribed since
            };
            if delivery.change.seq <= sub.seen_through || sub.paging.is_some() {
                continue;
            }
            sub.seen_through = delivery.change.seq;
            sub.position.clone_from(&delivery.change.position);
            sub.count_change(delivery.op, &delivery.change);
            delivered += 1;
            out.push(Out {
                id: sub.id.clone(),
                update: Update::Change {
                    op: delivery.op,
                    change: delivery.change,
                },
            });
        }
        self.deliveries.inc_by(delivered);
        out.extend(self.next_page().await?);
        self.flush_usage();
        Ok(out)
    }

    /// Adds the fields the subscriptions delivered to the usage counters, at most
    /// once a second (see [`crate::usage`]).
    fn flush_usage(&mut self) {
        if self.usage_flushed.elapsed() < USAGE_FLUSH_EVERY {
            return;
        }
        for (_, sub) in self.subs.iter_mut() {
            sub.tally.flush();
        }
        self.usage_flushed = std::time::Instant::now();
    }

    /// One page of the first snapshot being paged (one per drain: the transport
    /// sends it before it asks for the next).
    async fn next_page(&mut self) -> Result<Vec<Out>, Close> {
        let Some((_, sub)) = self.subs.iter_mut().find(|(_, sub)| sub.paging.is_some()) else {
            return Ok(Vec::new());
        };
        let updates = self.hub.next_page(sub).await.map_err(into_close)?;
        self.deliveries.inc_by(sub.count(&updates));
        let id = sub.id.clone();
        Ok(updates
            .into_iter()
            .map(|update| Out {
                id: id.clone(),
                update,
            })
            .collect())
    }

    async fn catch_up(&mut self) -> Result<Vec<Out>, Close> {
        let _slot = self.hub.catch_up_slot().await;
        let mut out = Vec::new();
        // A subscription still paging catches up after its last page anyway.
        for (_, sub) in self.subs.iter_mut().filter(|(_, sub)| sub.paging.is_none()) {
            let updates = match self.hub.store.codec().decode(&sub.position) {
                Ok(position) => self
                    .hub
                    .resume(sub, &position, None)
                    .await
                    .map_err(into_close)?,
                Err(e) => return Err(Close::internal(e)),
            };
            self.deliveries.inc_by(sub.count(&updates));
            out.extend(updates.into_iter().map(|update| Out {
                id: sub.id.clone(),
                update,
            }));
        }
        if out.len() > self.hub.max_pending_rows() {
            self.hub.metrics.slow_client_disconnects.inc();
            return Err(Close::TooSlow);
        }
        Ok(out)
    }
}

fn into_close(error: SubscribeError) -> Close {
    match error {
        SubscribeError::Failed(close) => close,
        other => Close::internal(other),
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.subscriptions.dec_by(self.subs.len() as i64);
    }
}

/// A row a resuming client missed: key, what to send, the row now, and the
/// position after the row's last missed change.
type MissedRow = (String, Op, Option<Row>, String);

/// What one read of the store gave a subscription.
struct Read {
    updates: Vec<Update>,
    /// The last commit the read reflects, and its position.
    seen_through: u64,
    position: String,
}

enum Attempt {
    Read(Read),
    TooOld,
    Ahead,
    TooManyToCompare,
}

/// A resume from a position issued under other access rules for the projection.
struct AccessEdit {
    /// The subscription as those rules served it.
    before: Arc<Selector>,
    /// The client's position, as it gave it.
    since: String,
}

impl Sub {
    /// Counts what `updates` deliver: the fields, for usage, and each change's
    /// freshness. Returns how many changes there were.
    fn count(&mut self, updates: &[Update]) -> u64 {
        let mut changes = 0;
        for update in updates {
            match update {
                Update::Snapshot { rows, .. } => self.tally.delivered(rows.len()),
                Update::Change { op, change } => {
                    self.count_change(*op, change);
                    changes += 1;
                }
                Update::Reset { .. } => {}
            }
        }
        changes
    }

    fn count_change(&mut self, op: Op, change: &LiveChange) {
        self.tally.delivered(op.row_count());
        if let Some(seconds) = change.delivery_latency() {
            self.freshness.observe(seconds);
        }
    }

    fn settle(&mut self, read: Read) -> Vec<Update> {
        self.seen_through = read.seen_through;
        self.position = read.position;
        read.updates
    }
}

impl Hub {
    /// What a client at `since` missed, one update per row (where it is now), or a
    /// reset and a snapshot when this replica cannot tell.
    async fn resume(
        self: &Arc<Self>,
        sub: &mut Sub,
        since: &crate::store::Position,
        edit: Option<AccessEdit>,
    ) -> Result<Vec<Update>, SubscribeError> {
        let deadline = tokio::time::Instant::now() + RESUME_WAIT;
        let edit = edit.map(Arc::new);
        let reason = loop {
            let (since, edit) = (since.clone(), edit.clone());
            let selector = sub.selector.clone();
            let attempt = self
                .off_the_workers(move |hub| hub.read_missed(&selector, &since, edit.as_deref()))
                .await?;
            match attempt {
                Attempt::Read(read) => return Ok(sub.settle(read)),
                Attempt::TooOld => {
                    break "the change log no longer reaches back to that position: here is a fresh snapshot"
                }
                Attempt::TooManyToCompare => {
                    break "the access rules changed and too many rows are to be compared: here is a fresh snapshot"
                }
                Attempt::Ahead if tokio::time::Instant::now() >= deadline => {
                    break "this replica has not read as far as that position: here is a fresh snapshot"
                }
                Attempt::Ahead => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        Ok(vec![
            Update::Reset {
                reason: reason.into(),
            },
            self.snapshot(sub).await?,
        ])
    }

    fn read_missed(
        &self,
        selector: &Selector,
        since: &crate::store::Position,
        edit: Option<&AccessEdit>,
    ) -> Result<Attempt, SubscribeError> {
        let view = self.store.view().map_err(store_failed)?;
        let changes = match view.missed(since).map_err(store_failed)? {
            Missed::Changes(changes) => changes,
            Missed::TooOld => return Ok(Attempt::TooOld),
            Missed::Ahead => return Ok(Attempt::Ahead),
        };
        // Who saw a row at `since` is judged by the rules the client was served under.
        let saw = edit.map_or(selector, |e| &e.before);
        let missed = missed_rows(selector, saw, &view, &changes)?;
        let mut rows = Vec::new();
        if let Some(edit) = edit {
            let projection = &selector.projection().name;
            let touched: HashSet<&str> = changes
                .iter()
                .filter(|c| &c.projection == projection)
                .map(|c| c.key.as_str())
                .collect();
            let Some(diff) = access_diff(
                self,
                &view,
                selector,
                &edit.before,
                &touched,
                ACCESS_COMPARE_LIMIT,
            )
            .map_err(store_failed)?
            else {
                return Ok(Attempt::TooManyToCompare);
            };
            // Before the missed rows, at the client's own position: one that drops
            // out part way resumes from there and is judged the same way again.
            rows.extend(
                diff.into_iter()
                    .map(|(key, op, row)| (key, op, Some(row), edit.since.clone())),
            );
        }
        let access = self.store.codec().access();
        rows.extend(
            missed
                .into_iter()
                .map(|(key, op, row, after)| (key, op, row, with_access(&after, access))),
        );
        let (seen_through, position) = self.reflected(&view)?;
        let last = rows.len().saturating_sub(1);
        let projection = &selector.projection().name;
        let updates = rows
            .into_iter()
            .enumerate()
            .map(|(n, (key, op, row, after))| {
                let after = if n == last { position.clone() } else { after };
                Update::Change {
                    op,
                    change: Arc::new(LiveChange::catch_up(projection, key, row, after)),
                }
            })
            .collect();
        Ok(Attempt::Read(Read {
            updates,
            seen_through,
            position,
        }))
    }

    /// The last commit a view reflects, and its position as clients see it.
    fn reflected(&self, view: &View<'_>) -> Result<(u64, String), SubscribeError> {
        let seq = view.seq().map_err(store_failed)?;
        let position = view.position().map_err(store_failed)?;
        Ok((seq, self.store.codec().encode(&position)))
    }
}

/// The rows the missed changes touched, each as the subscription should now have
/// it: the current row if visible, else a removal if any state it missed was
/// visible to it (so nobody learns of rows it may not see).
///
/// They come in the order of each row's last missed change, each with the position
/// after that change: every row whose last change is before it has been sent, and
/// every other row changes again after it, so a client that drops out half-way and
/// resumes from there misses nothing.
fn missed_rows(
    selector: &Selector,
    saw: &Selector,
    view: &View<'_>,
    changes: &[Change],
) -> Result<Vec<MissedRow>, SubscribeError> {
    let projection = &selector.projection().name;
    // key → (index of its last missed change, whether it saw any missed state)
    let mut touched: HashMap<&str, (usize, bool)> = HashMap::new();
    for (n, change) in changes.iter().enumerate() {
        if &change.projection != projection {
            continue;
        }
        let visible = change
            .previous
            .as_ref()
            .is_some_and(|row| saw.sees(&change.key, row));
        let entry = touched.entry(&change.key).or_insert((n, false));
        entry.0 = n;
        entry.1 |= visible;
    }
    let mut order: Vec<(&str, usize, bool)> = touched
        .into_iter()
        .map(|(k, (n, saw))| (k, n, saw))
        .collect();
    order.sort_by_key(|(_, n, _)| *n);
    let mut rows = Vec::new();
    for (key, last, saw) in order {
        let current = view.row(projection, key).map_err(store_failed)?;
        let op = match &current {
            Some(row) if selector.sees(key, row) => Some(Op::Upsert),
            None if saw => Some(Op::Delete),
            Some(_) if saw => Some(Op::Remove),
            _ => None,
        };
        if let Some(op) = op {
            rows.push((key.to_string(), op, current, changes[last].position.clone()));
        }
    }
    Ok(rows)
}

fn store_failed(error: crate::store::StoreError) -> SubscribeError {
    SubscribeError::Failed(Close::internal(error))
}
