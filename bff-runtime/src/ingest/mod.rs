//! Kafka ingest: reads every partition of every source topic, applies the events
//! to the projections in group-committed store transactions, and publishes the
//! committed changes.
//!
//! The store, not Kafka, is the truth for positions: partitions are assigned
//! explicitly at the offsets stored with the rows (the earliest offset for a new
//! store), so a crash between a store commit and a Kafka commit loses nothing and
//! applies nothing twice. Offsets are also committed to Kafka for lag tools.

mod dead_letter;
mod freshness;
pub mod pipeline;
mod progress;
mod retention;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use tracing::{debug, info, warn};

pub use dead_letter::MAX_DEAD_LETTER_PAYLOAD;
use dead_letter::{DeadLetters, Refusal};
pub use progress::{PartitionProgress, Progress};

use crate::command::correlate::{Correlations, COMMAND_ID_HEADER};
use crate::live::Router;
use crate::metrics::Metrics;
use crate::projection::{ApplyError, Engine, Record};
use crate::store::{Sealed, Store, StoreError};

/// The replay's pipeline, keeping what each batch read until it is written.
type Pipeline = pipeline::Pipeline<ReadBatch>;

const METADATA_TIMEOUT: Duration = Duration::from_secs(10);
/// How often to look for partitions added to the source topics.
const PARTITION_CHECK: Duration = Duration::from_secs(10);
/// While replaying (not ready yet), a transaction takes up to this many events or
/// this much time: nobody waits for a replayed change to be pushed, and each commit
/// costs a sync and writes every row it changed once, so fewer, larger commits
/// replay faster. Bounded so that a batch's rows and changes fit in memory.
const REPLAY_BATCH_EVENTS: usize = 5_000;
const REPLAY_BATCH_DELAY: Duration = Duration::from_millis(500);
/// A batch is sealed once it holds this many row changes, whatever its events: one
/// event may rewrite many rows (a customer renamed, every order embedding it), and a
/// batch keeps each changed row and its previous state in memory until written.
const BATCH_CHANGES: usize = 10_000;
/// How often a replay batch shows how far it has applied, in events.
const PROGRESS_EVERY: usize = 500;

/// Where to read from and how to batch.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    pub bootstrap_servers: String,
    /// `facet.<namespace>.<experience>.<ordinal>`: one group per pod.
    pub group_id: String,
    /// Extra librdkafka properties (from the spec and its Secret).
    pub properties: BTreeMap<String, String>,
    pub max_batch_events: usize,
    pub max_batch_delay: Duration,
    pub dead_letter_topic: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A running ingest thread.
pub struct IngestHandle {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Result<(), IngestError>>>,
}

impl IngestHandle {
    /// Asks the thread to stop after its current batch and waits for it.
    pub fn stop(mut self) -> Result<(), IngestError> {
        self.stop.store(true, Ordering::SeqCst);
        self.join()
    }

    fn join(&mut self) -> Result<(), IngestError> {
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(result)) => result,
            Some(Err(_)) => panic!("ingest thread panicked"),
            None => Ok(()),
        }
    }

    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Waits for the thread to end on its own (it does only on a fatal error).
    pub fn wait(mut self) -> Result<(), IngestError> {
        self.join()
    }
}

impl Drop for IngestHandle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Everything the ingest loop works with.
pub struct Ingest {
    pub engine: Arc<Engine>,
    pub store: Arc<Store>,
    pub router: Router,
    pub metrics: Arc<Metrics>,
    pub progress: Arc<Progress>,
    /// Told which commands' effects each committed batch made visible.
    pub correlations: Arc<Correlations>,
}

impl Ingest {
    /// Starts consuming on a thread of its own (redb and librdkafka are blocking APIs).
    pub fn spawn(self, config: IngestConfig) -> IngestHandle {
        let stop = Arc::new(AtomicBool::new(false));
        let stop_flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("ingest".into())
            .spawn(move || {
                let result = self.run(&config, &stop_flag);
                if let Err(e) = &result {
                    self.progress.fail(e.to_string());
                    tracing::error!(error = %e, "ingest stopped");
                }
                result
            })
            .expect("spawning the ingest thread");
        IngestHandle {
            stop,
            thread: Some(thread),
        }
    }

    fn run(&self, config: &IngestConfig, stop: &AtomicBool) -> Result<(), IngestError> {
        let consumer = consumer(config, self.progress.clone())?;
        let topics: HashMap<String, String> = self
            .engine
            .experience()
            .spec
            .sources
            .iter()
            .map(|s| (s.topic.clone(), s.name.clone()))
            .collect();
        let mut partitions = wait_for_partitions(&consumer, &topics, &self.progress, stop)?;
        let stored = self.store.offsets()?;
        let assignment = assignment(&partitions, &stored)?;
        let Some(targets) = self.targets(&consumer, &partitions, &stored, stop) else {
            return Ok(()); // stopped while waiting
        };
        consumer.assign(&assignment)?;
        // A replay into an empty store writes the index once, at its end.
        let defer_index = stored.is_empty() || self.store.index_deferred();
        if defer_index {
            self.progress.index_deferred();
        }
        self.progress.start(targets);
        let mut source_topics: Vec<String> = topics.keys().cloned().collect();
        source_topics.sort();
        retention::watch(client_config(config), source_topics, &self.progress);
        self.metrics
            .partitions_behind
            .set(self.progress.behind() as i64);
        info!(
            partitions = partitions.len(),
            resumed = !stored.is_empty(),
            "consuming; ready once caught up with the high watermarks at start"
        );

        let dead_letters = match &config.dead_letter_topic {
            Some(topic) => Some(DeadLetters::new(&client_config(config), topic)?),
            None => None,
        };
        let mut last_progress_log = Instant::now();
        let mut last_partition_check = Instant::now();
        let mut writing = Pipeline::new(self.store.clone(), self.router.clone(), defer_index);
        let mut announced_ready = false;
        while !stop.load(Ordering::SeqCst) {
            if last_partition_check.elapsed() > PARTITION_CHECK {
                self.finish(&consumer, &mut writing)?;
                self.assign_new_partitions(&consumer, &topics, &mut partitions)?;
                last_partition_check = Instant::now();
            }
            let applied = self.run_batch(
                &consumer,
                config,
                &topics,
                dead_letters.as_ref(),
                &mut writing,
                stop,
            )?;
            if applied > 0
                && last_progress_log.elapsed() > Duration::from_secs(5)
                && !self.progress.is_ready()
            {
                info!(behind = self.progress.behind(), "replaying");
                last_progress_log = Instant::now();
            }
            if writing.defer_index && self.progress.caught_up() {
                self.write_index(&consumer, &mut writing)?;
            }
            if !announced_ready && self.progress.is_ready() {
                self.finish(&consumer, &mut writing)?;
                writing.sync()?;
                info!("caught up with the topics: ready");
                announced_ready = true;
            }
        }
        self.finish(&consumer, &mut writing)?;
        if let Some(dead_letters) = dead_letters {
            dead_letters.settle(stop);
        }
        Ok(())
    }

    /// Where each partition starts (its stored offset, else its low watermark) and
    /// the high watermark that readiness waits for; none when asked to stop.
    fn targets(
        &self,
        consumer: &KafkaConsumer,
        partitions: &[(String, i32)],
        stored: &BTreeMap<(String, i32), i64>,
        stop: &AtomicBool,
    ) -> Option<BTreeMap<(String, i32), PartitionProgress>> {
        let mut targets = BTreeMap::new();
        for (topic, partition) in partitions {
            let position = stored.get(&(topic.clone(), *partition)).copied();
            let Some((low, high)) =
                wait_for_watermarks(consumer, topic, *partition, &self.progress, stop)
            else {
                return None; // stopped while waiting
            };
            targets.insert(
                (topic.clone(), *partition),
                PartitionProgress {
                    start: position.unwrap_or(low),
                    position: position.unwrap_or(low),
                    target: high,
                },
            );
        }
        Some(targets)
    }

    /// Partitions added to a source topic after the start are consumed too (from
    /// their beginning), so growing a topic loses no events. Called between batches,
    /// when everything read has been committed to the store: reassigning every
    /// partition at its stored offset then resumes exactly where each one was.
    fn assign_new_partitions(
        &self,
        consumer: &KafkaConsumer,
        topics: &HashMap<String, String>,
        partitions: &mut Vec<(String, i32)>,
    ) -> Result<(), IngestError> {
        let mut added = Vec::new();
        for topic in topics.keys() {
            let Ok(metadata) = consumer.fetch_metadata(Some(topic), METADATA_TIMEOUT) else {
                continue; // a transient metadata error: try again at the next check
            };
            for partition in partitions_of(&metadata, topic) {
                let id = (topic.clone(), partition);
                if !partitions.contains(&id) {
                    added.push(id);
                }
            }
        }
        if added.is_empty() {
            return Ok(());
        }
        info!(added = ?added, "source topics grew: consuming the new partitions from the beginning");
        partitions.extend(added);
        consumer.assign(&assignment(partitions, &self.store.offsets()?)?)?;
        Ok(())
    }

    /// A transactional producer ends each transaction with a commit marker: a
    /// record that takes an offset but is never delivered. A partition whose last
    /// records are markers would stay short of its high watermark for ever; the
    /// consumer's position moves past them, so when idle, progress follows it.
    fn advance_past_control_records(&self, consumer: &KafkaConsumer) {
        if self.progress.is_ready() {
            return;
        }
        let Ok(positions) = consumer.position() else {
            return;
        };
        for element in positions.elements() {
            if let Offset::Offset(next) = element.offset() {
                self.progress
                    .advance(element.topic(), element.partition(), next);
            }
        }
        self.metrics
            .partitions_behind
            .set(self.progress.behind() as i64);
    }

    /// Reads up to one batch, applies it in one store transaction, publishes the
    /// committed changes and commits the offsets to Kafka. Returns the messages read.
    ///
    /// While replaying, the batch is written on a thread of its own and the next one
    /// applies meanwhile (reading through it): `writing` is the batch being written,
    /// finished (its changes published, its offsets committed) once written. Live,
    /// each batch is written and published before the next one starts, so a change
    /// waits for no other batch.
    fn run_batch(
        &self,
        consumer: &KafkaConsumer,
        config: &IngestConfig,
        topics: &HashMap<String, String>,
        dead_letters: Option<&DeadLetters>,
        writing: &mut Pipeline,
        stop: &AtomicBool,
    ) -> Result<usize, IngestError> {
        let replaying = !self.progress.is_ready();
        let mut batch = self.start_batch(writing, replaying)?;
        let mut reached: BTreeMap<(String, i32), i64> = BTreeMap::new();
        let mut deadline: Option<Instant> = None;
        let mut read = 0;
        let mut commands_seen = Vec::new();
        let watch_commands = !self.engine.experience().commands.is_empty();
        let (max_events, max_delay) = batch_bounds(config, replaying);
        while read < max_events
            && batch.change_count() < BATCH_CHANGES
            && !stop.load(Ordering::SeqCst)
        {
            let Some(wait) = poll_wait(deadline, replaying) else {
                break;
            };
            let message = match consumer.poll(wait) {
                None if deadline.is_none() => {
                    drop(batch);
                    return self.idle(consumer, writing);
                }
                None => break,
                Some(Err(e)) => {
                    // librdkafka reconnects by itself; a broker outage is not fatal.
                    warn!(error = %e, "kafka consumer error");
                    if deadline.is_none() {
                        return Ok(0);
                    }
                    break;
                }
                Some(Ok(message)) => message,
            };
            deadline.get_or_insert_with(|| Instant::now() + max_delay);
            read += 1;
            if !self.apply_message(&message, topics, &mut batch, dead_letters, stop)? {
                return Ok(0); // stopping: the batch is not committed
            }
            if watch_commands {
                commands_seen.extend(command_id_of(&message));
            }
            reached.insert(
                (message.topic().to_string(), message.partition()),
                message.offset() + 1,
            );
            if replaying && read % PROGRESS_EVERY == 0 {
                self.progress.applying_all(&reached);
            }
        }
        if read == 0 {
            return Ok(0);
        }
        // The batch's offsets move past its rejected events only once the
        // dead-letter topic has them: a crash re-sends, it never loses.
        if let Some(dead_letters) = dead_letters {
            if !dead_letters.settle(stop) {
                return Ok(0);
            }
        }
        if replaying && !self.progress.catches_up_with(&reached) {
            batch.unlogged();
        }
        let sealed = batch.seal();
        let read_batch = ReadBatch {
            events: read,
            changes: sealed.changes().count(),
            reached,
            commands_seen,
        };
        self.commit_batch(consumer, writing, sealed, read_batch, replaying)?;
        Ok(read)
    }

    /// The replay has caught up: the index it left for its end is written from
    /// the stored rows, and the pod may be ready.
    fn write_index(
        &self,
        consumer: &KafkaConsumer,
        writing: &mut Pipeline,
    ) -> Result<(), IngestError> {
        self.finish(consumer, writing)?;
        self.progress.writing_index();
        self.store.complete_index()?;
        writing.defer_index = false;
        self.progress.index_written();
        Ok(())
    }

    /// A batch after the one being written; a replay's keeps one change per row
    /// and may leave the index for the replay's end.
    fn start_batch<'s>(
        &'s self,
        writing: &Pipeline,
        replaying: bool,
    ) -> Result<crate::store::Batch<'s>, IngestError> {
        let batch = self.store.batch_after(writing.before())?;
        Ok(match (replaying, writing.defer_index) {
            (false, _) => batch,
            (true, false) => batch.coalescing(),
            (true, true) => batch.coalescing().deferring_index(),
        })
    }

    /// Nothing to read: nothing to commit, but readiness may still be due (an
    /// empty topic is caught up from the start).
    fn idle(&self, consumer: &KafkaConsumer, writing: &mut Pipeline) -> Result<usize, IngestError> {
        self.finish(consumer, writing)?;
        self.advance_past_control_records(consumer);
        self.progress.touch();
        // Records may arrive that no batch reads yet: the lag says so, for every
        // partition read (one the store has no offset of is read from its start,
        // the low watermark).
        if let Ok(assigned) = consumer.assignment() {
            let position = self.store.position();
            let elements = assigned.elements();
            let next = |topic: &str, partition: i32| {
                let at = position.offsets().get(&(topic.to_string(), partition));
                at.copied().unwrap_or(0)
            };
            freshness::lag(
                &self.metrics,
                consumer,
                elements
                    .iter()
                    .map(|e| (e.topic(), e.partition(), next(e.topic(), e.partition()))),
            );
        }
        Ok(0)
    }

    /// Applies one record to the batch, or refuses it (counted, logged, and sent
    /// to the dead-letter topic). Returns false when asked to stop meanwhile.
    fn apply_message(
        &self,
        message: &rdkafka::message::BorrowedMessage<'_>,
        topics: &HashMap<String, String>,
        batch: &mut crate::store::Batch<'_>,
        dead_letters: Option<&DeadLetters>,
        stop: &AtomicBool,
    ) -> Result<bool, IngestError> {
        let topic = message.topic();
        let source = topics.get(topic).map(String::as_str).unwrap_or_default();
        let payload = message.payload();
        batch.read_record(topic, message.partition(), message.offset());
        // Built per event only when a rule reads it.
        let record = match self.engine.uses_record() {
            true => record_of(message),
            false => Record::default(),
        };
        let outcome = apply_isolated(|| {
            fault::panic_if_asked(payload);
            self.engine.apply_bytes(source, payload, &record, batch)
        })?;
        let error = match outcome {
            Ok(applied) => {
                self.metrics.events_applied.inc();
                self.metrics
                    .embed_rows_rewritten
                    .inc_by(applied.fanned_out as u64);
                batch.apply_event(applied, message.timestamp().to_millis())?;
                return Ok(true);
            }
            Err(error) => error,
        };
        self.metrics.reject(error.reason());
        warn!(
            topic,
            partition = message.partition(),
            offset = message.offset(),
            reason = error.reason(),
            error = %error,
            "skipping an event that cannot be applied"
        );
        let Some(dead_letters) = dead_letters else {
            return Ok(true);
        };
        let why = Refusal {
            reason: error.reason(),
            error: &error.to_string(),
        };
        if !dead_letters.send(message, why, stop) {
            return Ok(false);
        }
        self.metrics.dead_lettered.inc();
        Ok(true)
    }

    /// Writes a sealed batch: replaying, on the store writer while the next one
    /// applies (the writer publishes it); live, at once, then publishes it.
    fn commit_batch(
        &self,
        consumer: &KafkaConsumer,
        writing: &mut Pipeline,
        sealed: Sealed,
        read: ReadBatch,
        replaying: bool,
    ) -> Result<(), IngestError> {
        if let Some(written) = writing.written()? {
            // A caller waiting for a command hears it is visible only once the
            // subscribers have its changes: the writer publishes the batch now
            // rather than with the next one.
            if !written.commands_seen.is_empty() {
                writing.publish()?;
            }
            self.settle(consumer, written)?;
        }
        if replaying {
            writing.write(sealed, read);
            return Ok(());
        }
        writing.flush()?;
        self.store.write(&sealed)?;
        freshness::committed(&self.metrics, &sealed);
        self.router.publish(sealed.into_changes());
        self.settle(consumer, read)
    }

    /// Waits for everything the replay is writing to be written and published.
    fn finish(&self, consumer: &KafkaConsumer, writing: &mut Pipeline) -> Result<(), IngestError> {
        match writing.flush()? {
            Some(written) => self.settle(consumer, written),
            None => Ok(()),
        }
    }

    /// A batch is committed: the commands it made visible are told, and its
    /// offsets count for readiness and are committed to Kafka for lag tools.
    fn settle(&self, consumer: &KafkaConsumer, read: ReadBatch) -> Result<(), IngestError> {
        self.metrics.batches_committed.inc();
        self.metrics.row_changes.inc_by(read.changes as u64);
        debug!(
            events = read.events,
            changes = read.changes,
            "batch committed"
        );
        let position = self.store.codec().encode(&self.store.position());
        self.correlations.visible(read.commands_seen, &position);

        let mut commit = TopicPartitionList::new();
        for ((topic, partition), next) in &read.reached {
            commit.add_partition_offset(topic, *partition, Offset::Offset(*next))?;
            self.progress.advance(topic, *partition, *next);
        }
        self.metrics
            .partitions_behind
            .set(self.progress.behind() as i64);
        let reached = read.reached.iter();
        freshness::lag(
            &self.metrics,
            consumer,
            reached.map(|((topic, partition), next)| (topic.as_str(), *partition, *next)),
        );
        if let Err(e) = consumer.commit(&commit, CommitMode::Async) {
            debug!(error = %e, "committing offsets to kafka (informational only)");
        }
        Ok(())
    }
}

/// What a batch read, to act on once it is committed.
struct ReadBatch {
    events: usize,
    /// Row changes the batch committed.
    changes: usize,
    /// Per partition, the next offset to read.
    reached: BTreeMap<(String, i32), i64>,
    commands_seen: Vec<String>,
}

/// The most events and the longest wait of one batch: a replay's are larger.
fn batch_bounds(config: &IngestConfig, replaying: bool) -> (usize, Duration) {
    match replaying {
        true => (
            REPLAY_BATCH_EVENTS.max(config.max_batch_events),
            REPLAY_BATCH_DELAY.max(config.max_batch_delay),
        ),
        false => (config.max_batch_events, config.max_batch_delay),
    }
}

/// How long to wait for the next record; none once the batch's deadline has passed.
///
/// Live, a batch takes what is already there and commits as soon as nothing more
/// is: changes reach clients without waiting out a window, and under load batches
/// grow by themselves while the last one commits. Replaying, it waits for the next
/// fetch instead, up to its deadline.
fn poll_wait(deadline: Option<Instant>, replaying: bool) -> Option<Duration> {
    match deadline {
        Some(d) if Instant::now() >= d => None,
        Some(d) if replaying => Some(d.saturating_duration_since(Instant::now())),
        Some(_) => Some(Duration::ZERO),
        None => Some(Duration::from_millis(100)),
    }
}

/// The `facet-command-id` of an event that a command led to.
fn command_id_of(message: &rdkafka::message::BorrowedMessage<'_>) -> Option<String> {
    let header = message
        .headers()?
        .iter()
        .find(|h| h.key == COMMAND_ID_HEADER)?;
    Some(std::str::from_utf8(header.value?).ok()?.to_string())
}

/// What rules see of a Kafka record besides its value.
fn record_of(message: &rdkafka::message::BorrowedMessage<'_>) -> Record {
    let headers = message
        .headers()
        .map(|headers| {
            headers
                .iter()
                .filter_map(|h| {
                    Some((
                        h.key.to_string(),
                        std::str::from_utf8(h.value?).ok()?.to_string(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    Record {
        key: message
            .key()
            .and_then(|k| std::str::from_utf8(k).ok())
            .map(str::to_string),
        topic: message.topic().to_string(),
        partition: message.partition(),
        offset: message.offset(),
        timestamp: message.timestamp().to_millis(),
        headers,
    }
}

fn client_config(config: &IngestConfig) -> ClientConfig {
    crate::contract::kafka_client(&config.bootstrap_servers, &config.properties)
}

/// librdkafka's client errors (a refused login, an unreachable broker) go to the
/// log and, until ingest has started, to the readiness report, which then says why
/// the pod is not ready.
struct IngestContext {
    progress: Arc<Progress>,
}

impl rdkafka::ClientContext for IngestContext {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        warn!(%error, reason, "kafka client error");
        self.progress.kafka_error(reason.to_string());
    }
}

impl rdkafka::consumer::ConsumerContext for IngestContext {}

type KafkaConsumer = BaseConsumer<IngestContext>;

/// The consumer's prefetch bounds, unless the spec sets them. The queue bounds are
/// checked only before a fetch, and every record keeps its decompressed batch
/// alive, so one large fetch response overshoots them by its whole (decompressed)
/// size: small fetches are what bound librdkafka's memory. With small fetches the
/// queue fills often, and librdkafka's default 1 s back-off would idle the replay.
const PREFETCH_DEFAULTS: &[(&str, &str)] = &[
    ("queued.max.messages.kbytes", "16384"),
    ("queued.min.messages", "5000"),
    ("fetch.max.bytes", "2097152"),
    ("max.partition.fetch.bytes", "262144"),
    ("fetch.queue.backoff.ms", "10"),
];

fn consumer(config: &IngestConfig, progress: Arc<Progress>) -> Result<KafkaConsumer, IngestError> {
    let mut client = client_config(config);
    client
        .set("group.id", &config.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false");
    // librdkafka prefetches up to 64 MiB by default, and fetches up to 50 MiB at a
    // time; applying events, not reading them, is what limits a replay, so a smaller
    // queue costs no speed and keeps that memory for the store (docs/benchmarks.md,
    // "Sixth look"). A spec may still set its own.
    for (property, value) in PREFETCH_DEFAULTS {
        if !config.properties.contains_key(*property) {
            client.set(*property, *value);
        }
    }
    Ok(client.create_with_context(IngestContext { progress })?)
}

/// Applies one event, so that a panic (a bug, not bad input) costs that event and
/// not the pod: the event is refused as `panic` (and dead-lettered) with what the
/// panic said, and ingest goes on. Applying only reads the batch, so a panic leaves
/// it as it was.
fn apply_isolated<T>(
    apply: impl FnOnce() -> Result<Result<T, ApplyError>, StoreError>,
) -> Result<Result<T, ApplyError>, StoreError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(apply)).unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".into());
        Ok(Err(ApplyError::Panicked(message)))
    })
}

/// Faults a test build injects: `FACET_TEST_PANIC_ON=<text>` panics while applying
/// any event whose payload contains the text. Release builds have no such hook.
mod fault {
    #[cfg(debug_assertions)]
    pub fn panic_if_asked(payload: Option<&[u8]>) {
        static TRIGGER: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
        let trigger = TRIGGER.get_or_init(|| {
            std::env::var("FACET_TEST_PANIC_ON")
                .ok()
                .filter(|t| !t.is_empty())
        });
        if let (Some(trigger), Some(payload)) = (trigger, payload) {
            if payload
                .windows(trigger.len())
                .any(|w| w == trigger.as_bytes())
            {
                panic!("injected by FACET_TEST_PANIC_ON");
            }
        }
    }

    #[cfg(not(debug_assertions))]
    #[inline(always)]
    pub fn panic_if_asked(_: Option<&[u8]>) {}
}

/// Every partition at its `stored` offset (the next to read), or from its beginning.
fn assignment(
    partitions: &[(String, i32)],
    stored: &BTreeMap<(String, i32), i64>,
) -> Result<TopicPartitionList, IngestError> {
    let mut assignment = TopicPartitionList::new();
    for (topic, partition) in partitions {
        let offset = match stored.get(&(topic.clone(), *partition)) {
            Some(next) => Offset::Offset(*next),
            None => Offset::Beginning,
        };
        assignment.add_partition_offset(topic, *partition, offset)?;
    }
    Ok(assignment)
}

fn partitions_of(metadata: &rdkafka::metadata::Metadata, topic: &str) -> Vec<i32> {
    metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect()
}

/// A partition's low and high watermarks, asked again while the broker does not
/// answer: a slow broker at start delays readiness, it does not end the process.
/// `None` when told to stop first.
fn wait_for_watermarks(
    consumer: &KafkaConsumer,
    topic: &str,
    partition: i32,
    progress: &Progress,
    stop: &AtomicBool,
) -> Option<(i64, i64)> {
    loop {
        match consumer.fetch_watermarks(topic, partition, METADATA_TIMEOUT) {
            Ok(watermarks) => return Some(watermarks),
            Err(e) => {
                let reason = format!("cannot read the offsets of {topic}/{partition}: {e}");
                warn!(%reason, "waiting to start ingest");
                progress.wait(reason);
            }
        }
        if stop.load(Ordering::SeqCst) {
            return None;
        }
    }
}

/// Every partition of every source topic, waiting for topics that do not exist yet.
fn wait_for_partitions(
    consumer: &KafkaConsumer,
    topics: &HashMap<String, String>,
    progress: &Progress,
    stop: &AtomicBool,
) -> Result<Vec<(String, i32)>, IngestError> {
    let mut names: Vec<&String> = topics.keys().collect();
    names.sort();
    let mut partitions = Vec::new();
    for topic in names {
        let mut warned = false;
        loop {
            let reason = match consumer.fetch_metadata(Some(topic), METADATA_TIMEOUT) {
                Ok(metadata) => {
                    let found = partitions_of(&metadata, topic);
                    if !found.is_empty() {
                        partitions.extend(found.into_iter().map(|p| (topic.clone(), p)));
                        break;
                    }
                    format!("topic {topic} does not exist yet")
                }
                Err(e) => format!("cannot read the metadata of topic {topic}: {e}"),
            };
            if stop.load(Ordering::SeqCst) {
                return Ok(partitions);
            }
            if !warned {
                warn!(%reason, "waiting to start ingest");
                warned = true;
            }
            progress.wait(reason);
            // Nothing is assigned yet: polling only serves the client's error events.
            let _ = consumer.poll(Duration::from_millis(500));
        }
    }
    Ok(partitions)
}
