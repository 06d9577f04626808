//! Positions in the source topics: for each partition, the next offset to read.
//!
//! Every replica consumes the same Kafka records, each partition in offset order, so
//! a position means the same thing on every replica and across restarts: "every
//! record before these offsets is reflected". Replicas interleave partitions
//! differently, so their local commit order differs; positions do not depend on it.
//!
//! Clients get positions as opaque strings: the definition epoch (the hash of the
//! sources and projections: rows built by another definition are not comparable),
//! `.` and the access digest (which access rules decided what the client was sent:
//! after an access edit, a resuming client is sent the rows it may now see and told
//! of those it may no longer see), then `~source.partition.offset` per partition,
//! in URL-safe characters only so a position fits in a query string, an SSE id and
//! a GraphQL string alike.

use std::collections::BTreeMap;

/// The next offset to read, per (topic, partition). A partition that is absent has
/// had nothing read from it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Position(BTreeMap<(String, i32), i64>);

impl Position {
    pub fn from_offsets(offsets: BTreeMap<(String, i32), i64>) -> Self {
        Position(offsets)
    }

    pub fn offsets(&self) -> &BTreeMap<(String, i32), i64> {
        &self.0
    }

    /// The next offset to read from a partition (0 when nothing was read).
    pub fn next(&self, topic: &str, partition: i32) -> i64 {
        self.0
            .iter()
            .find(|((t, p), _)| t == topic && *p == partition)
            .map_or(0, |(_, next)| *next)
    }

    /// Records that everything before `next` in the partition has been read.
    /// Called for every record ingested: a known partition is found without
    /// allocating its key (a position has few partitions).
    pub fn advance(&mut self, topic: &str, partition: i32, next: i64) {
        match self
            .0
            .iter_mut()
            .find(|((t, p), _)| t == topic && *p == partition)
        {
            Some((_, current)) => *current = (*current).max(next),
            None => {
                self.0.insert((topic.to_string(), partition), next);
            }
        }
    }

    /// Whether the record at `offset` is reflected at this position.
    pub fn has_read(&self, topic: &str, partition: i32, offset: i64) -> bool {
        offset < self.next(topic, partition)
    }

    /// Whether everything reflected at `other` is reflected here too.
    pub fn covers(&self, other: &Position) -> bool {
        other
            .0
            .iter()
            .all(|((topic, partition), next)| self.next(topic, *partition) >= *next)
    }
}

/// Why a client's position cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PositionError {
    #[error("`{0}` is not a position this server issued")]
    Malformed(String),
    /// Issued for rows built by another definition: only a fresh snapshot is right.
    #[error("the position was issued for another definition of the projections")]
    OtherEpoch,
}

/// Turns positions into client strings and back, for one experience definition.
#[derive(Debug, Clone)]
pub struct PositionCodec {
    epoch: String,
    /// The access rules' digest: positions issued from here on carry it.
    access: String,
    /// Source topics in spec order: a position names them by index.
    topics: Vec<String>,
}

impl PositionCodec {
    pub fn new(epoch: &str, access: &str, topics: Vec<String>) -> Self {
        PositionCodec {
            epoch: epoch.to_string(),
            access: access.to_string(),
            topics,
        }
    }

    /// The access digest positions are issued with.
    pub fn access(&self) -> &str {
        &self.access
    }

    pub fn encode(&self, position: &Position) -> String {
        use std::fmt::Write;
        let mut text = format!("{}.{}", self.epoch, self.access);
        for ((topic, partition), next) in &position.0 {
            // A topic outside the spec is never read, so every one has an index.
            if let Some(index) = self.topics.iter().position(|t| t == topic) {
                let _ = write!(text, "~{index}.{partition}.{next}");
            }
        }
        text
    }

    pub fn decode(&self, text: &str) -> Result<Position, PositionError> {
        let malformed = || PositionError::Malformed(truncated(text));
        let mut parts = text.split('~');
        let head = parts.next().ok_or_else(malformed)?;
        // Positions issued before access digests existed have none.
        let (epoch, access) = head.split_once('.').unwrap_or((head, ""));
        if epoch.len() != self.epoch.len()
            || !epoch.bytes().all(|b| b.is_ascii_hexdigit())
            || access.len() > ACCESS_DIGEST_LEN
            || !access.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Err(malformed());
        }
        if epoch != self.epoch {
            return Err(PositionError::OtherEpoch);
        }
        let mut offsets = BTreeMap::new();
        for part in parts {
            let mut fields = part.split('.');
            let (Some(index), Some(partition), Some(next), None) =
                (fields.next(), fields.next(), fields.next(), fields.next())
            else {
                return Err(malformed());
            };
            let topic = index
                .parse::<usize>()
                .ok()
                .and_then(|i| self.topics.get(i))
                .ok_or_else(malformed)?;
            let partition = partition.parse::<i32>().map_err(|_| malformed())?;
            let next = next.parse::<i64>().map_err(|_| malformed())?;
            if partition < 0 || next < 0 {
                return Err(malformed());
            }
            offsets.insert((topic.clone(), partition), next);
        }
        Ok(Position(offsets))
    }
}

/// The longest access digest a position may carry.
const ACCESS_DIGEST_LEN: usize = 16;

/// The access digest a position was issued with (empty when it has none). Only
/// meaningful for a position [`PositionCodec::decode`] accepts.
pub fn access_of(text: &str) -> &str {
    let head = text.split('~').next().unwrap_or("");
    head.split_once('.').map_or("", |(_, access)| access)
}

/// `text` as issued under `access`: the same offsets, with another access digest.
pub fn with_access(text: &str, access: &str) -> String {
    let (head, offsets) = text.split_once('~').map_or((text, ""), |(h, o)| (h, o));
    let epoch = head.split_once('.').map_or(head, |(epoch, _)| epoch);
    match offsets.is_empty() {
        true => format!("{epoch}.{access}"),
        false => format!("{epoch}.{access}~{offsets}"),
    }
}

fn truncated(text: &str) -> String {
    text.chars().take(80).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codec() -> PositionCodec {
        PositionCodec::new("0123abcd", "5e", vec!["orders".into(), "payments".into()])
    }

    #[test]
    fn round_trips_and_is_url_safe() {
        let mut position = Position::default();
        position.advance("orders", 0, 12);
        position.advance("orders", 2, 7);
        position.advance("payments", 0, 3);
        let text = codec().encode(&position);
        assert_eq!(text, "0123abcd.5e~0.0.12~0.2.7~1.0.3");
        assert!(text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b)));
        assert_eq!(codec().decode(&text).unwrap(), position);
        assert_eq!(codec().decode("0123abcd.5e").unwrap(), Position::default());
        assert_eq!(access_of(&text), "5e");
    }

    #[test]
    fn positions_carry_the_access_digest_they_were_issued_with() {
        // One issued under other access rules, and one from before digests: both
        // decode to the same offsets.
        let mut position = Position::default();
        position.advance("orders", 0, 12);
        for text in ["0123abcd.77~0.0.12", "0123abcd~0.0.12"] {
            assert_eq!(codec().decode(text).unwrap(), position);
        }
        assert_eq!(access_of("0123abcd.77~0.0.12"), "77");
        assert_eq!(access_of("0123abcd~0.0.12"), "");
        assert_eq!(
            with_access("0123abcd.77~0.0.12", "5e"),
            "0123abcd.5e~0.0.12"
        );
        assert_eq!(with_access("0123abcd", "5e"), "0123abcd.5e");
        assert!(codec().decode("0123abcd.xyz~0.0.1").is_err());
    }

    #[test]
    fn another_epoch_or_garbage_is_refused() {
        assert_eq!(
            codec().decode("ffffffff~0.0.1"),
            Err(PositionError::OtherEpoch)
        );
        for bad in [
            "",
            "12",
            "0123abcd~9.0.1",
            "0123abcd~0.0",
            "0123abcd~0.x.1",
            "0123abcd~0.0.-1",
            "0123abcd.00112233445566778~0.0.1",
        ] {
            assert!(
                matches!(codec().decode(bad), Err(PositionError::Malformed(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn covers_is_per_partition() {
        let mut a = Position::default();
        a.advance("orders", 0, 5);
        a.advance("orders", 1, 5);
        let mut b = Position::default();
        b.advance("orders", 0, 6);
        assert!(!a.covers(&b));
        assert!(b.covers(&Position::default()));
        b.advance("orders", 1, 2);
        assert!(!b.covers(&a) && !a.covers(&b));
        a.advance("orders", 0, 6);
        assert!(a.covers(&b));
        assert!(a.has_read("orders", 0, 5) && !a.has_read("orders", 0, 6));
    }
}
