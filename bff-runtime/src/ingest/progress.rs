//! How far ingest has come: a pod is ready only once every partition has reached
//! the high watermark it had when the pod started, so no client ever sees a
//! half-built projection.

use parking_lot::Mutex;
use std::collections::BTreeMap;

pub use crate::contract::{PartitionReport, ProgressReport, TopicRetention};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionProgress {
    /// Where this run started reading.
    pub start: i64,
    /// The next offset to apply.
    pub position: i64,
    /// The high watermark at start.
    pub target: i64,
}

#[derive(Default)]
pub struct Progress {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    started: bool,
    /// Once ready, a pod stays ready: later lag is normal streaming, not a replay.
    ready: bool,
    draining: bool,
    /// The replay left the index for its end: not ready until it is written.
    index_pending: bool,
    error: Option<String>,
    waiting: Option<String>,
    kafka_error: Option<String>,
    partitions: BTreeMap<(String, i32), PartitionProgress>,
    /// Per partition, the next offset to apply, committed or not: what the report
    /// shows, so a replay in large batches shows its progress as it goes.
    applied: BTreeMap<(String, i32), i64>,
    retention: Option<Vec<TopicRetention>>,
}

impl State {
    fn caught_up(&self) -> bool {
        self.started && self.partitions.values().all(|p| p.position >= p.target)
    }

    fn is_ready(&self) -> bool {
        self.ready && !self.index_pending && self.error.is_none() && !self.draining
    }
}

impl Progress {
    fn state(&self) -> parking_lot::MutexGuard<'_, State> {
        // A poisoned lock only means a panic elsewhere; the data is still a report.
        self.state.lock()
    }

    /// What ingest waits for before it can start.
    pub fn wait(&self, reason: String) {
        self.state().waiting = Some(reason);
    }

    /// An error of the Kafka client; kept for the report until ingest starts.
    pub fn kafka_error(&self, reason: String) {
        let mut state = self.state();
        if !state.started {
            state.kafka_error = Some(reason);
        }
    }

    pub fn start(&self, partitions: BTreeMap<(String, i32), PartitionProgress>) {
        let mut state = self.state();
        state.waiting = None;
        state.kafka_error = None;
        state.partitions = partitions;
        state.started = true;
        state.ready = state.caught_up();
    }

    pub fn advance(&self, topic: &str, partition: i32, position: i64) {
        let mut state = self.state();
        if let Some(p) = state.partitions.get_mut(&(topic.to_string(), partition)) {
            p.position = p.position.max(position);
        }
        if state.caught_up() {
            state.ready = true;
        }
    }

    /// [`Progress::applying`] for each partition of `reached` (next offset by
    /// topic and partition).
    pub fn applying_all(&self, reached: &BTreeMap<(String, i32), i64>) {
        for ((topic, partition), next) in reached {
            self.applying(topic, *partition, *next);
        }
    }

    /// Records up to `next` of a partition are applied in a batch not yet committed:
    /// shown in the report, never counted for readiness.
    pub fn applying(&self, topic: &str, partition: i32, next: i64) {
        let mut state = self.state();
        let applied = state
            .applied
            .entry((topic.to_string(), partition))
            .or_default();
        *applied = (*applied).max(next);
    }

    /// Re-checks readiness when nothing arrives (all targets may already be met).
    pub fn touch(&self) {
        let mut state = self.state();
        if state.caught_up() {
            state.ready = true;
        }
    }

    /// What the brokers last said about the source topics' retention.
    pub fn retention(&self, topics: Vec<TopicRetention>) {
        self.state().retention = Some(topics);
    }

    pub fn fail(&self, error: String) {
        let mut state = self.state();
        state.error = Some(error);
        state.ready = false;
    }

    pub fn is_ready(&self) -> bool {
        self.state().is_ready()
    }

    /// Whether every partition has reached its target (ready or not).
    pub fn caught_up(&self) -> bool {
        self.state().caught_up()
    }

    /// Whether committing up to `reached` (next offset by topic and partition)
    /// would catch up: a replay's last batch.
    pub fn catches_up_with(&self, reached: &BTreeMap<(String, i32), i64>) -> bool {
        let state = self.state();
        state.started
            && state
                .partitions
                .iter()
                .all(|(id, p)| p.position.max(reached.get(id).copied().unwrap_or(0)) >= p.target)
    }

    /// The replay leaves the index for its end: not ready until [`Progress::index_written`].
    pub fn index_deferred(&self) {
        self.state().index_pending = true;
    }

    /// The index is being written (shown in the report as what readiness waits for).
    pub fn writing_index(&self) {
        self.state().waiting = Some("writing the index from the stored rows".into());
    }

    pub fn index_written(&self) {
        let mut state = self.state();
        state.index_pending = false;
        state.waiting = None;
    }

    /// Shutting down: not ready from now on, so Services stop sending clients here.
    pub fn drain(&self) {
        self.state().draining = true;
    }

    /// Partitions not yet at their start target.
    pub fn behind(&self) -> usize {
        self.state()
            .partitions
            .values()
            .filter(|p| p.position < p.target)
            .count()
    }

    pub fn report(&self) -> ProgressReport {
        let state = self.state();
        ProgressReport {
            ready: state.is_ready(),
            started: state.started,
            draining: state.draining,
            error: state.error.clone(),
            waiting: state.waiting.clone(),
            kafka_error: state.kafka_error.clone(),
            partitions: state
                .partitions
                .iter()
                .map(|(id, p)| PartitionReport {
                    topic: id.0.clone(),
                    partition: id.1,
                    start: p.start,
                    position: state
                        .applied
                        .get(id)
                        .map_or(p.position, |a| (*a).max(p.position)),
                    target: p.target,
                })
                .collect(),
            retention: state.retention.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applied_records_show_in_the_report_but_readiness_waits_for_the_commit() {
        let progress = Progress::default();
        let partition = PartitionProgress {
            start: 0,
            position: 0,
            target: 100,
        };
        progress.start(BTreeMap::from([(("t".to_string(), 0), partition)]));
        progress.applying("t", 0, 100);
        assert_eq!(progress.report().partitions[0].position, 100);
        assert!(!progress.is_ready(), "nothing is committed yet");
        progress.advance("t", 0, 100);
        assert!(progress.is_ready());
    }

    #[test]
    fn a_deferred_index_holds_readiness_until_it_is_written() {
        let progress = Progress::default();
        let partition = PartitionProgress {
            start: 0,
            position: 0,
            target: 100,
        };
        progress.index_deferred();
        progress.start(BTreeMap::from([(("t".to_string(), 0), partition)]));
        let reached = BTreeMap::from([(("t".to_string(), 0), 100)]);
        assert!(!progress.catches_up_with(&BTreeMap::new()));
        assert!(progress.catches_up_with(&reached));
        progress.advance("t", 0, 100);
        assert!(progress.caught_up());
        assert!(!progress.is_ready(), "the index is not written yet");
        assert!(!progress.report().ready);
        progress.writing_index();
        assert!(progress.report().waiting.is_some());
        progress.index_written();
        assert!(progress.is_ready());
        assert!(progress.report().waiting.is_none());
    }
}
