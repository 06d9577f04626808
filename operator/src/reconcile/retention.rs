//! Whether the source topics still hold every event: a full replay (a new replica,
//! a rebuilt store) reads each topic from its first offset, so a topic that deletes
//! old records cannot rebuild what the running pods show. Judged here (pure) from
//! what the brokers told a serving pod (its readiness report), and reported as the
//! `Replayable` condition.

/// Verdicts recently judged, per experience generation: a serving pod is asked at
/// most every [`RetentionChecks::EVERY`] once it has answered. Until one answers
/// (no pod has started yet) every reconcile asks, and none is scheduled for it:
/// the pod becoming ready moves its StatefulSet, which reconciles again. A new
/// generation asks at once.
#[derive(Default)]
pub struct RetentionChecks(parking_lot::Mutex<std::collections::HashMap<String, Checked>>);

#[derive(Clone)]
struct Checked {
    at: std::time::Instant,
    generation: i64,
    verdict: Result<(), String>,
}

impl RetentionChecks {
    pub const EVERY: std::time::Duration = std::time::Duration::from_secs(300);

    /// The last verdict for `uid` at `generation`, if it is recent enough to reuse.
    pub fn recent(
        &self,
        uid: &str,
        generation: i64,
        now: std::time::Instant,
    ) -> Option<Result<(), String>> {
        let checks = self.0.lock();
        let checked = checks.get(uid).filter(|c| c.generation == generation)?;
        (now.saturating_duration_since(checked.at) < Self::EVERY).then(|| checked.verdict.clone())
    }

    pub fn remember(
        &self,
        uid: &str,
        generation: i64,
        now: std::time::Instant,
        verdict: Result<(), String>,
    ) {
        let checked = Checked {
            at: now,
            generation,
            verdict,
        };
        self.0.lock().insert(uid.to_string(), checked);
    }

    /// The experience is gone: its verdict with it.
    pub fn forget(&self, uid: &str) {
        self.0.lock().remove(uid);
    }
}

pub use facet_bff::contract::TopicRetention;

/// Where a team learns to keep what the topics do not.
const BACKUP_HINT: &str =
    " (back up the stores with `facet-bff image export`: README, Backup and restore)";

/// The verdict: `Ok(())` when every topic keeps everything, else why not.
pub fn judge(topics: &[TopicRetention]) -> Result<(), String> {
    let mut problems = Vec::new();
    for topic in topics {
        let name = &topic.topic;
        let policies: Vec<&str> = topic.cleanup_policy.split(',').map(str::trim).collect();
        if policies.contains(&"compact") {
            problems.push(format!(
                "{name} is compacted (cleanup.policy={}): a replay sees only the latest record of each key",
                topic.cleanup_policy
            ));
        }
        if policies.contains(&"delete") {
            if topic.retention_ms >= 0 {
                problems.push(format!(
                    "{name} deletes records after {} (retention.ms={})",
                    human(topic.retention_ms),
                    topic.retention_ms
                ));
            }
            if topic.retention_bytes >= 0 {
                problems.push(format!(
                    "{name} deletes records beyond {} bytes per partition (retention.bytes)",
                    topic.retention_bytes
                ));
            }
        }
        let gone: i64 = topic.earliest.iter().map(|(_, low)| low).sum();
        if gone > 0 {
            problems.push(format!("{name} no longer holds its first {gone} records"));
        }
    }
    match problems.is_empty() {
        true => Ok(()),
        false => Err(format!(
            "a full replay may miss events: {}{BACKUP_HINT}",
            problems.join("; ")
        )),
    }
}

fn human(ms: i64) -> String {
    const DAY: i64 = 86_400_000;
    const HOUR: i64 = 3_600_000;
    match ms {
        ms if ms >= DAY && ms % DAY == 0 => format!("{}d", ms / DAY),
        ms if ms >= HOUR && ms % HOUR == 0 => format!("{}h", ms / HOUR),
        ms => format!("{ms}ms"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(policy: &str, ms: i64, bytes: i64, earliest: &[(i32, i64)]) -> TopicRetention {
        TopicRetention {
            topic: "shop.orders.v1".into(),
            cleanup_policy: policy.into(),
            retention_ms: ms,
            retention_bytes: bytes,
            earliest: earliest.to_vec(),
        }
    }

    #[test]
    fn a_verdict_is_reused_until_it_is_old_or_the_generation_moves() {
        let checks = RetentionChecks::default();
        let start = std::time::Instant::now();
        assert_eq!(checks.recent("uid", 1, start), None, "never asked");
        checks.remember("uid", 1, start, Ok(()));
        let later = |d: std::time::Duration| start + d;
        assert_eq!(
            checks.recent("uid", 1, later(RetentionChecks::EVERY / 2)),
            Some(Ok(()))
        );
        assert_eq!(
            checks.recent("uid", 1, later(RetentionChecks::EVERY)),
            None,
            "too old"
        );
        assert_eq!(
            checks.recent("uid", 2, start),
            None,
            "a new generation asks at once"
        );
        checks.forget("uid");
        assert_eq!(checks.recent("uid", 1, start), None);
    }

    #[test]
    fn only_topics_that_keep_everything_support_a_full_replay() {
        assert_eq!(judge(&[topic("delete", -1, -1, &[(0, 0), (1, 0)])]), Ok(()));
        assert_eq!(
            judge(&[topic("delete", 604_800_000, -1, &[(0, 0)])]),
            Err(format!("a full replay may miss events: shop.orders.v1 deletes records after 7d (retention.ms=604800000){BACKUP_HINT}"))
        );
        assert_eq!(
            judge(&[topic("delete", -1, -1, &[(0, 40), (1, 2)])]),
            Err(format!("a full replay may miss events: shop.orders.v1 no longer holds its first 42 records{BACKUP_HINT}"))
        );
        let compacted = judge(&[topic("compact", 604_800_000, -1, &[(0, 0)])]).unwrap_err();
        assert!(compacted.contains("is compacted"), "{compacted}");
        assert!(
            !compacted.contains("retention.ms"),
            "compaction ignores retention.ms"
        );
        let both = judge(&[topic("compact,delete", 3_600_000, 1024, &[(0, 0)])]).unwrap_err();
        assert!(
            both.contains("after 1h") && both.contains("1024 bytes"),
            "{both}"
        );
    }
}
