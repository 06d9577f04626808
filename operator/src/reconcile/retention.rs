//! Whether the source topics still hold every event: a full replay (a new replica,
//! a rebuilt store) reads each topic from its first offset, so a topic that deletes
//! old records cannot rebuild what the running pods show. Judged here (pure) from
//! what the brokers report, and reported as the `Replayable` condition.

/// What a broker says about one source topic.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicRetention {
    pub topic: String,
    /// `cleanup.policy`: `delete`, `compact` or both.
    pub cleanup_policy: String,
    /// `retention.ms` (-1: forever).
    pub retention_ms: i64,
    /// `retention.bytes` (-1: no limit).
    pub retention_bytes: i64,
    /// The first offset each partition still holds (its low watermark).
    pub earliest: Vec<(i32, i64)>,
}

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
