//! The replay's two stages: ingest applies a batch while the store writer writes
//! the one before and hands it to the live feed. Public so that the replay bench
//! drives the runtime's own pipeline.
//!
//! One writer thread for the whole replay, not one per batch: memory a thread
//! allocates (redb's pages, encoding buffers) stays in that thread's heap, and a
//! heap left by each exiting thread was never reused (peak RSS doubled).
//!
//! The writer also publishes what it wrote, so that moving and freeing a batch's
//! rows (a tenth of the applying thread's work) is not on the applying thread. A
//! batch is published once the batch after it is sealed, when nothing reads
//! through it any more and it moves to the live feed without a copy. That may
//! be after its offsets were settled (and the pod ready): a client that
//! subscribed meanwhile read those rows from the store, and the live core skips
//! changes at or below what a subscription has read.
//!
//! Most replayed batches are committed without a sync (see [`Store::write_as`]):
//! every [`SYNC_EVERY`]th is synced, which bounds both what a crash replays again
//! and how far the file grows (pages freed by an unsynced commit are reused only
//! after a synced one), and the replay ends with one ([`Pipeline::sync`]).

use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;

use crate::live::Router;
use crate::store::{Sealed, Store, StoreError};

/// Batches written between syncs while replaying.
const SYNC_EVERY: usize = 16;

/// Replay batches written and published on a thread of their own. `T` is what
/// the caller keeps with a batch until it is written (what it read, to settle).
pub struct Pipeline<T> {
    store: Arc<Store>,
    router: Router,
    writer: Option<Writer>,
    in_flight: Option<(Arc<Sealed>, T)>,
    /// Batches written since the last sync.
    unsynced: usize,
    /// Whether the writer holds a batch it has not published yet.
    unpublished: bool,
    /// Whether replay batches leave the index for the replay's end.
    pub defer_index: bool,
}

enum Job {
    /// Publish the batch written last, then write this one.
    Write(Arc<Sealed>, redb::Durability),
    /// Publish the batch written last.
    Publish,
}

struct Writer {
    jobs: SyncSender<Job>,
    done: Receiver<Result<(), StoreError>>,
}

impl<T> Pipeline<T> {
    pub fn new(store: Arc<Store>, router: Router, defer_index: bool) -> Self {
        Pipeline {
            store,
            router,
            writer: None,
            in_flight: None,
            unsynced: 0,
            unpublished: false,
            defer_index,
        }
    }

    /// The batch being written, which the next batch reads through.
    pub fn before(&self) -> Option<Arc<Sealed>> {
        self.in_flight.as_ref().map(|(batch, _)| batch.clone())
    }

    /// Starts writing `batch`; the batch before it must be [`Pipeline::written`].
    pub fn write(&mut self, batch: Sealed, keep: T) {
        debug_assert!(self.in_flight.is_none(), "one batch in flight");
        self.unsynced += 1;
        let durability = match self.unsynced % SYNC_EVERY {
            0 => redb::Durability::Immediate,
            _ => redb::Durability::None,
        };
        let batch = Arc::new(batch);
        self.writer()
            .jobs
            .send(Job::Write(batch.clone(), durability))
            .expect("the store writer stopped");
        self.in_flight = Some((batch, keep));
        self.unpublished = true;
    }

    /// Waits for the batch in flight to be written and gives back what was kept
    /// with it (none in flight: `None`). The writer publishes it later.
    pub fn written(&mut self) -> Result<Option<T>, StoreError> {
        let Some((batch, keep)) = self.in_flight.take() else {
            return Ok(None);
        };
        drop(batch); // the writer's is then the last reference
        self.wait()?;
        Ok(Some(keep))
    }

    /// Waits for everything in flight to be written and published.
    pub fn flush(&mut self) -> Result<Option<T>, StoreError> {
        let kept = self.written()?;
        self.publish()?;
        Ok(kept)
    }

    /// Has the writer publish the batch it wrote last, if it has not yet; the
    /// batch must be [`Pipeline::written`].
    pub fn publish(&mut self) -> Result<(), StoreError> {
        debug_assert!(self.in_flight.is_none(), "the batch is written");
        if self.unpublished {
            self.writer()
                .jobs
                .send(Job::Publish)
                .expect("the store writer stopped");
            self.wait()?;
            self.unpublished = false;
        }
        Ok(())
    }

    /// Syncs what the replay wrote, once it is finished.
    pub fn sync(&mut self) -> Result<(), StoreError> {
        if !self.unsynced.is_multiple_of(SYNC_EVERY) {
            self.store.sync()?;
        }
        self.unsynced = 0;
        Ok(())
    }

    fn wait(&self) -> Result<(), StoreError> {
        let writer = self.writer.as_ref().expect("a job was sent");
        writer.done.recv().expect("the store writer panicked")
    }

    /// The writer thread, started with the first batch.
    fn writer(&mut self) -> &Writer {
        self.writer.get_or_insert_with(|| {
            let (jobs, received) = sync_channel::<Job>(1);
            let (report, done) = sync_channel(1);
            let (store, router) = (self.store.clone(), self.router.clone());
            std::thread::Builder::new()
                .name("store-writer".into())
                .spawn(move || write_and_publish(&store, &router, received, report))
                .expect("spawning the store writer");
            Writer { jobs, done }
        })
    }
}

/// The writer's loop: each batch is written, then published when the next job
/// comes (the batch after it is sealed by then).
fn write_and_publish(
    store: &Store,
    router: &Router,
    jobs: Receiver<Job>,
    report: SyncSender<Result<(), StoreError>>,
) {
    let mut unpublished: Option<Arc<Sealed>> = None;
    for job in jobs {
        if let Some(batch) = unpublished.take() {
            let changes = Arc::try_unwrap(batch)
                .map(Sealed::into_changes)
                .unwrap_or_else(|batch| batch.changes().cloned().collect());
            router.publish(changes);
        }
        let result = match job {
            Job::Write(batch, durability) => {
                let result = store.write_as(&batch, durability);
                unpublished = result.is_ok().then_some(batch);
                result
            }
            Job::Publish => Ok(()),
        };
        if report.send(result).is_err() {
            return;
        }
    }
}
