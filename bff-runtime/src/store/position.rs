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
//! of those it may no longer see), then `~b` and the offsets in a compact binary
//! form (below), in URL-safe characters only so a position fits in a query string,
//! an SSE id and a GraphQL string alike, and in a header at hundreds of partitions.
//!
//! The offsets' binary form: runs of consecutive partitions of one source, each
//! `varint(source index) varint(first partition) varint(count)`, then the first
//! offset and each next one as a zigzag varint of its difference from the one
//! before, in base64url without padding. Partitions of one topic hold similar
//! offsets, so most cost one to three bytes. Positions issued before it, with
//! `~source.partition.offset` per partition, are still understood.

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
        let mut text = format!("{}.{}", self.epoch, self.access);
        // A topic outside the spec is never read, so every one has an index.
        let mut offsets: Vec<(u64, u64, u64)> = position
            .0
            .iter()
            .filter_map(|((topic, partition), next)| {
                let index = self.topics.iter().position(|t| t == topic)?;
                Some((index as u64, *partition as u64, *next as u64))
            })
            .collect();
        if offsets.is_empty() {
            return text;
        }
        offsets.sort_unstable();
        let mut bytes = Vec::with_capacity(offsets.len() * 4 + 8);
        let mut runs = offsets.chunk_by(|a, b| a.0 == b.0 && a.1 + 1 == b.1);
        for run in &mut runs {
            varint(&mut bytes, run[0].0);
            varint(&mut bytes, run[0].1);
            varint(&mut bytes, run.len() as u64);
            let mut previous = 0i64;
            for (_, _, next) in run {
                let next = *next as i64;
                varint(&mut bytes, zigzag(next.wrapping_sub(previous)));
                previous = next;
            }
        }
        text.push_str("~b");
        text.push_str(&base64url::encode(&bytes));
        text
    }

    /// The offsets of a position's compact form.
    fn decode_compact(&self, encoded: &str) -> Option<BTreeMap<(String, i32), i64>> {
        let bytes = base64url::decode(encoded)?;
        let mut reader = bytes.as_slice();
        let mut offsets = BTreeMap::new();
        while !reader.is_empty() {
            let topic = self
                .topics
                .get(usize::try_from(read_varint(&mut reader)?).ok()?)?;
            let first = read_varint(&mut reader)?;
            let count = read_varint(&mut reader)?;
            // Each offset takes at least a byte: a count past what is left is garbage.
            if count > reader.len() as u64 {
                return None;
            }
            let mut previous = 0i64;
            for i in 0..count {
                let partition = i32::try_from(first.checked_add(i)?).ok()?;
                let next = previous.checked_add(unzigzag(read_varint(&mut reader)?))?;
                if next < 0 {
                    return None;
                }
                offsets.insert((topic.clone(), partition), next);
                previous = next;
            }
        }
        Some(offsets)
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
        let parts: Vec<&str> = parts.collect();
        if let [compact] = parts.as_slice() {
            if let Some(encoded) = compact.strip_prefix('b') {
                let offsets = self.decode_compact(encoded).ok_or_else(malformed)?;
                return Ok(Position(offsets));
            }
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

/// Small differences either way in few bytes: 0, -1, 1, -2... as 0, 1, 2, 3...
fn zigzag(n: i64) -> u64 {
    ((n << 1) ^ (n >> 63)) as u64
}

fn unzigzag(n: u64) -> i64 {
    ((n >> 1) as i64) ^ -((n & 1) as i64)
}

/// LEB128: seven bits a byte, low first.
fn varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn read_varint(input: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = input.split_first()?;
        *input = rest;
        value |= u64::from(byte & 0x7f).checked_shl(shift)?;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// RFC 4648 base64url without padding: what a query string, an SSE id and a
/// header carry unescaped.
mod base64url {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

    pub fn encode(bytes: &[u8]) -> String {
        let mut text = String::with_capacity(bytes.len().div_ceil(3) * 4);
        for chunk in bytes.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
            for i in 0..=chunk.len() {
                text.push(ALPHABET[(n >> (18 - 6 * i) & 0x3f) as usize] as char);
            }
        }
        text
    }

    pub fn decode(text: &str) -> Option<Vec<u8>> {
        let sextets: Vec<u32> = text
            .bytes()
            .map(|c| ALPHABET.iter().position(|&a| a == c).map(|i| i as u32))
            .collect::<Option<_>>()?;
        let mut bytes = Vec::with_capacity(sextets.len() * 3 / 4);
        for chunk in sextets.chunks(4) {
            if chunk.len() == 1 {
                return None; // six bits make no byte
            }
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, &s)| n | s << (18 - 6 * i));
            for i in 0..chunk.len() - 1 {
                bytes.push((n >> (16 - 8 * i)) as u8);
            }
        }
        Some(bytes)
    }
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
        assert!(text.starts_with("0123abcd.5e~b"), "{text}");
        assert!(text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b)));
        assert_eq!(codec().decode(&text).unwrap(), position);
        // The textual form positions had before is still understood.
        assert_eq!(
            codec().decode("0123abcd.5e~0.0.12~0.2.7~1.0.3").unwrap(),
            position
        );
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

    /// Regression (issue 24): every message and SSE id carried `~t.p.offset` for
    /// every partition, over 8 KB at 512. Sizes are in docs/protocol.md.
    #[test]
    fn positions_stay_small_at_hundreds_of_partitions() {
        let codec = PositionCodec::new(
            "27953a286599af49",
            "fd480f102ce5",
            vec!["orders".into(), "payments".into()],
        );
        // Two sources sharing N partitions, offsets near 10^9: keyed (partitions
        // apart by up to ±100,000 records, a pseudo-random spread) and balanced.
        let mut sizes = Vec::new();
        for partitions in [1, 64, 512] {
            let (mut keyed, mut balanced) = (Position::default(), Position::default());
            for p in 0..partitions {
                let topic = ["orders", "payments"][p as usize % 2];
                let spread = (i64::from(p) * 7_919_113) % 200_001 - 100_000;
                keyed.advance(topic, p / 2, 1_000_000_000 + spread);
                balanced.advance(topic, p / 2, 1_000_000_000 + i64::from(p % 3));
            }
            let (keyed_text, balanced_text) = (codec.encode(&keyed), codec.encode(&balanced));
            assert_eq!(codec.decode(&keyed_text).unwrap(), keyed, "{partitions}");
            assert_eq!(
                codec.decode(&balanced_text).unwrap(),
                balanced,
                "{partitions}"
            );
            sizes.push((partitions, keyed_text.len(), balanced_text.len()));
        }
        eprintln!("position length at (partitions, keyed, balanced): {sizes:?}");
        assert!(sizes[2].1 < 4096, "{sizes:?}");
    }

    #[test]
    fn compact_garbage_is_refused() {
        for bad in [
            "0123abcd.5e~b",
            "0123abcd.5e~b!!",
            "0123abcd.5e~bA",
            "0123abcd.5e~b_____w",
        ] {
            let decoded = codec().decode(bad);
            assert!(
                matches!(decoded, Err(PositionError::Malformed(_))) || bad.ends_with("~b"),
                "{bad}: {decoded:?}"
            );
        }
        let mut bytes = Vec::new();
        for v in [9, 0, 1, 5] {
            varint(&mut bytes, v); // source 9 does not exist
        }
        let text = format!("0123abcd.5e~b{}", base64url::encode(&bytes));
        assert!(codec().decode(&text).is_err());
        for n in [0u64, 1, 127, 128, 300, u64::from(u32::MAX), u64::MAX] {
            let mut bytes = Vec::new();
            varint(&mut bytes, n);
            assert_eq!(read_varint(&mut bytes.as_slice()), Some(n));
        }
        for len in 0..10 {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37) as u8).collect();
            assert_eq!(base64url::decode(&base64url::encode(&bytes)), Some(bytes));
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
