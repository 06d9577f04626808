//! The projection store: rows, their change log, an index over the fields that
//! access rules compare, and the source offsets, kept together in one embedded redb
//! database so that a batch of events, the row changes it caused and the offsets it
//! reached commit in one transaction.

mod batch;
pub mod image;
mod index;
mod position;

use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

pub use batch::{Batch, Sealed};
pub use position::{access_of, with_access, Position, PositionCodec, PositionError};

use crate::projection::{Row, RowOp};

/// (projection, key) → the row as JSON.
const ROWS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("rows");
/// (projection, key) → a row rules wrote before an `upsert` created it: kept, not served.
const HELD: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("held");
/// (embedded projection, its key, embedding projection, embed, embedding key): the
/// reverse index of embeds, so a changed row finds the rows that show it.
const EMBEDS: TableDefinition<(&str, &str, &str, &str, &str), ()> = TableDefinition::new("embeds");
/// Commit sequence number → [`Change`] as JSON. One log for every projection.
const CHANGES: TableDefinition<u64, &[u8]> = TableDefinition::new("changes");
/// Sequence number of a batch's last change → the position after that batch, so a
/// resume finds where to start reading the log without decoding it.
const LOG_BATCHES: TableDefinition<u64, &[u8]> = TableDefinition::new("log_batches");
/// (projection, field, value, key) for the fields the index covers.
const INDEX: TableDefinition<(&str, &str, &str, &str), ()> = TableDefinition::new("index");
/// (topic, partition) → the next offset to read.
const OFFSETS: TableDefinition<(&str, i32), i64> = TableDefinition::new("offsets");
/// Store-wide settings: the definition hash and layout the rows were built with,
/// and where the change log starts.
const META: TableDefinition<&str, &str> = TableDefinition::new("meta");
/// The last commit sequence number.
const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");

const DEFINITION_HASH: &str = "definition_hash";
/// The fields the index covers, per projection (JSON).
const INDEXED: &str = "indexed";
/// `access:<digest>` → the access rules (JSON) positions with that digest were issued under.
const ACCESS_RULES: &str = "access:";
/// Where the change log starts: it holds every change of every record after it.
const LOG_START: &str = "log_start";
const SEQ: &str = "seq";
/// redb's page cache (its default is 1 GiB): large replay transactions and image
/// restores would otherwise grow the pod's memory with the store instead of staying
/// bounded. Half of it may hold a transaction's written pages. Replay reads mostly
/// rows the batch itself holds, so a larger cache bought little speed (64 MiB: as
/// fast in memory, 50 MB more peak memory; docs/benchmarks.md).
const CACHE_BYTES: usize = 32 * 1024 * 1024;
/// Bumped when the tables change meaning, so an older store is rebuilt, not misread.
const FORMAT: &str = "4";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store: {0}")]
    Redb(#[from] redb::Error),
    #[error("store holds a record it cannot read: {0}")]
    Corrupt(#[from] serde_json::Error),
}

macro_rules! redb_errors {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Redb(e.into())
            }
        }
    )*};
}
redb_errors!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);

/// The Kafka record a change came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Source {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// One committed change, as the live feed and the change log carry it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    /// This store's commit order (local to the replica; never shown to clients).
    pub seq: u64,
    pub projection: String,
    pub key: String,
    #[serde(flatten)]
    pub op: RowOp,
    /// The row before this change (none if it did not exist): who could see it
    /// decides who is told that it left, and a delta is a patch from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<Row>,
    pub source: Source,
    /// The client position after this change's record.
    pub position: String,
    /// When the event that caused it was produced (ms since the epoch), if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_time_ms: Option<i64>,
}

/// What opening the store found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opened {
    /// A new, empty store.
    Empty,
    /// Rows built by the same projection definition: resume from the stored offsets.
    Resumed,
    /// The projection definition changed: everything was wiped, to be rebuilt from the start.
    Rebuilt,
}

/// What a client at some position missed.
#[derive(Debug, Clone, PartialEq)]
pub enum Missed {
    /// Every change of every record after the position, in this store's order.
    Changes(Vec<Change>),
    /// The change log no longer reaches back to the position.
    TooOld,
    /// The position is ahead of this store (another replica is further on).
    Ahead,
}

/// What the store is for: the definition it holds and which fields it indexes.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Hash of the sources and projections; also the epoch of client positions.
    pub definition_hash: String,
    /// Source topics in spec order, for client positions.
    pub topics: Vec<String>,
    /// Projection → the fields kept in the index (those access rules compare).
    pub indexed: BTreeMap<String, Vec<String>>,
    /// Most changes the log keeps, across projections.
    pub change_log_length: u64,
    /// Projection → its access rule's text (none: every row is visible). Not part
    /// of the definition: an edit keeps the rows, and positions carry its digest.
    pub access: BTreeMap<String, String>,
}

impl Layout {
    /// A short digest of the access rules, as positions carry it.
    pub fn access_digest(&self) -> String {
        access_digest(&self.access)
    }
}

fn access_digest(access: &BTreeMap<String, String>) -> String {
    use sha2::Digest;
    let text = serde_json::to_string(access).unwrap_or_default();
    sha2::Sha256::digest(text.as_bytes())
        .iter()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// redb with the store's bounded cache: every database the runtime opens (a store,
/// an image being restored or exported) is opened through it.
fn database() -> redb::Builder {
    let mut builder = redb::Builder::new();
    builder.set_cache_size(CACHE_BYTES);
    builder
}

pub struct Store {
    db: Database,
    layout: Layout,
    codec: PositionCodec,
    /// The committed position, kept in memory so a batch starts from it.
    position: Mutex<Position>,
    /// Whether the index is left for the end of a replay (see [`index`]).
    index_deferred: AtomicBool,
}

impl Store {
    /// Opens (or creates) the store at `path`. When it was built with another
    /// definition or table layout it is wiped, so the runtime rebuilds it from the
    /// earliest offsets.
    pub fn open(path: &Path, layout: Layout) -> Result<(Store, Opened), StoreError> {
        let db = database().create(path)?;
        let txn = db.begin_write()?;
        let stamp = format!("{FORMAT}:{}", layout.definition_hash);
        let opened = {
            let mut meta = txn.open_table(META)?;
            let stored = meta.get(DEFINITION_HASH)?.map(|v| v.value().to_string());
            let opened = match stored.as_deref() {
                None => Opened::Empty,
                Some(hash) if hash == stamp => Opened::Resumed,
                Some(_) => Opened::Rebuilt,
            };
            meta.insert(DEFINITION_HASH, stamp.as_str())?;
            opened
        };
        if opened == Opened::Rebuilt {
            txn.delete_table(ROWS)?;
            txn.delete_table(HELD)?;
            txn.delete_table(EMBEDS)?;
            txn.delete_table(CHANGES)?;
            txn.delete_table(LOG_BATCHES)?;
            txn.delete_table(INDEX)?;
            txn.delete_table(OFFSETS)?;
            txn.delete_table(COUNTERS)?;
            txn.open_table(META)?.remove(LOG_START)?;
            txn.open_table(META)?.remove(index::DEFERRED)?;
        }
        // Create every table, so that readers never meet a missing one.
        txn.open_table(ROWS)?;
        txn.open_table(HELD)?;
        txn.open_table(EMBEDS)?;
        txn.open_table(CHANGES)?;
        txn.open_table(LOG_BATCHES)?;
        txn.open_table(INDEX)?;
        txn.open_table(COUNTERS)?;
        // The index covers what the access rules compare. A new rule keeps the rows
        // (access is not part of the definition) but may compare other fields: the
        // index is rebuilt from the stored rows, without reading Kafka again.
        let indexed = serde_json::to_string(&layout.indexed)?;
        let stored_indexed = txn
            .open_table(META)?
            .get(INDEXED)?
            .map(|v| v.value().to_string());
        let index_deferred = index::is_deferred(&txn.open_table(META)?)?;
        if opened == Opened::Resumed
            && !index_deferred
            && stored_indexed.as_deref() != Some(indexed.as_str())
        {
            let entries = index::build(&txn, &layout.indexed)?;
            tracing::info!(
                entries,
                "the access rules compare other fields now: index rebuilt from the stored rows"
            );
        }
        txn.open_table(META)?.insert(INDEXED, indexed.as_str())?;
        // The rules behind each access digest positions were issued with, so that a
        // client resuming from before an access edit can be told what changed for it.
        let access_key = format!("{ACCESS_RULES}{}", layout.access_digest());
        let rules = serde_json::to_string(&layout.access)?;
        txn.open_table(META)?
            .insert(access_key.as_str(), rules.as_str())?;
        let position = offsets_in(&txn.open_table(OFFSETS)?)?;
        txn.commit()?;
        let codec = PositionCodec::new(
            &layout.definition_hash,
            &layout.access_digest(),
            layout.topics.clone(),
        );
        let store = Store {
            db,
            codec,
            position: Mutex::new(position),
            index_deferred: AtomicBool::new(index_deferred),
            layout: Layout {
                change_log_length: layout.change_log_length.max(1),
                ..layout
            },
        };
        Ok((store, opened))
    }

    pub fn codec(&self) -> &PositionCodec {
        &self.codec
    }

    /// The committed position.
    pub fn position(&self) -> Position {
        self.position.lock().clone()
    }

    /// The next offset to read for every partition the store has seen.
    pub fn offsets(&self) -> Result<BTreeMap<(String, i32), i64>, StoreError> {
        Ok(self.position().offsets().clone())
    }

    /// The access rules positions carrying `digest` were issued under, if this
    /// store has run with them.
    pub fn access_rules(
        &self,
        digest: &str,
    ) -> Result<Option<BTreeMap<String, String>>, StoreError> {
        let txn = self.db.begin_read()?;
        let key = format!("{ACCESS_RULES}{digest}");
        match txn.open_table(META)?.get(key.as_str())? {
            Some(text) => Ok(Some(serde_json::from_str(text.value())?)),
            None => Ok(None),
        }
    }

    /// Whether a replay left the index for its end (see [`index`]).
    pub fn index_deferred(&self) -> bool {
        self.index_deferred.load(Ordering::Acquire)
    }

    /// Writes a deferred index from the stored rows (nothing to do otherwise).
    pub fn complete_index(&self) -> Result<(), StoreError> {
        if !self.index_deferred() {
            return Ok(());
        }
        let started = std::time::Instant::now();
        let txn = self.db.begin_write()?;
        let entries = index::build(&txn, &self.layout.indexed)?;
        txn.commit()?;
        self.index_deferred.store(false, Ordering::Release);
        tracing::info!(
            entries,
            took = ?started.elapsed(),
            "replay caught up: index written from the stored rows"
        );
        Ok(())
    }

    /// Whether a projection's field is in the index.
    pub fn is_indexed(&self, projection: &str, field: &str) -> bool {
        self.layout
            .indexed
            .get(projection)
            .is_some_and(|fields| fields.iter().any(|f| f == field))
    }

    /// One consistent read: everything read through it is as of one commit.
    pub fn view(&self) -> Result<View<'_>, StoreError> {
        Ok(View {
            store: self,
            txn: self.db.begin_read()?,
        })
    }

    /// A read put back in use: everything read through the view is as of the commit
    /// it was frozen at.
    pub fn thaw(&self, frozen: Frozen) -> View<'_> {
        View {
            store: self,
            txn: frozen.0,
        }
    }

    /// Writes an image of the store as of its last commit (see [`image`]).
    pub fn export(
        &self,
        out: impl std::io::Write,
    ) -> Result<image::ImageSummary, image::ImageError> {
        image::export(&self.db.begin_read()?, out)
    }

    /// One row.
    pub fn row(&self, projection: &str, key: &str) -> Result<Option<Row>, StoreError> {
        self.view()?.row(projection, key)
    }
}

fn offsets_in(
    table: &impl ReadableTable<(&'static str, i32), i64>,
) -> Result<Position, StoreError> {
    let mut offsets = BTreeMap::new();
    for entry in table.iter()? {
        let (key, value) = entry?;
        let (topic, partition) = key.value();
        offsets.insert((topic.to_string(), partition), value.value());
    }
    Ok(Position::from_offsets(offsets))
}

/// Positions are kept in the store as lists of (topic, partition, next offset).
fn position_to_bytes(position: &Position) -> Result<Vec<u8>, StoreError> {
    let list: Vec<(&str, i32, i64)> = position
        .offsets()
        .iter()
        .map(|((t, p), o)| (t.as_str(), *p, *o))
        .collect();
    Ok(serde_json::to_vec(&list)?)
}

fn position_from_bytes(bytes: &[u8]) -> Result<Position, StoreError> {
    let list: Vec<(String, i32, i64)> = serde_json::from_slice(bytes)?;
    Ok(Position::from_offsets(
        list.into_iter().map(|(t, p, o)| ((t, p), o)).collect(),
    ))
}

/// How a field value is written in the index: only scalars are indexed, and
/// numbers by their value (so `1` and `1.0` meet, as in CEL).
pub fn index_value(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(s) => Some(format!("s{s}")),
        serde_json::Value::Bool(b) => Some(format!("b{b}")),
        serde_json::Value::Number(n) => n.as_f64().map(|f| format!("n{f}")),
        _ => None,
    }
}

/// A read transaction.
/// Most rows one scan reads, and the longest it takes, before it stops and says
/// where to go on from: a list read is a page, not a walk over the projection.
pub const SCAN_MAX_ROWS: usize = 100_000;
pub const SCAN_MAX_TIME: std::time::Duration = std::time::Duration::from_secs(2);

/// What a scan found.
#[derive(Debug)]
pub struct Scan {
    pub rows: Vec<(String, Row)>,
    /// The key to go on after, when the scan stopped before the projection's end
    /// (the page is full, or the budget spent).
    pub resume_after: Option<String>,
    /// Stopped by the budget, not because `limit` rows were found.
    pub budget_spent: bool,
}

pub struct View<'s> {
    store: &'s Store,
    txn: redb::ReadTransaction,
}

/// A [`View`] kept to be read on later ([`Store::thaw`]), when it is no longer
/// tied to a borrow of the store: a snapshot sent in pages reads every page at
/// one commit. While it lives, the pages the commit used are not reused, so the
/// file may grow under writes; it is held only as long as a client takes pages.
pub struct Frozen(redb::ReadTransaction);

impl View<'_> {
    /// Keeps this read for later.
    pub fn freeze(self) -> Frozen {
        Frozen(self.txn)
    }

    /// The sequence number of the last commit this view sees.
    pub fn seq(&self) -> Result<u64, StoreError> {
        Ok(self
            .txn
            .open_table(COUNTERS)?
            .get(SEQ)?
            .map(|v| v.value())
            .unwrap_or(0))
    }

    /// The position this view reflects.
    pub fn position(&self) -> Result<Position, StoreError> {
        offsets_in(&self.txn.open_table(OFFSETS)?)
    }

    pub fn row(&self, projection: &str, key: &str) -> Result<Option<Row>, StoreError> {
        match self.txn.open_table(ROWS)?.get((projection, key))? {
            Some(bytes) => Ok(Some(serde_json::from_slice(bytes.value())?)),
            None => Ok(None),
        }
    }

    /// Rows of a projection in key order after `after`, that `keep` accepts, at most
    /// `limit` of them. With `lookup` (a field and the value it must equal) on an
    /// indexed field, only the rows with that value are read.
    pub fn rows(
        &self,
        projection: &str,
        after: Option<&str>,
        lookup: Option<(&str, &serde_json::Value)>,
        limit: usize,
        keep: impl FnMut(&str, &Row) -> bool,
    ) -> Result<Vec<(String, Row)>, StoreError> {
        Ok(self.scan(projection, after, lookup, limit, keep)?.rows)
    }

    /// As [`View::rows`], within a budget: a scan stops once it has read
    /// [`SCAN_MAX_ROWS`] rows or taken [`SCAN_MAX_TIME`] (a filter no index serves
    /// may keep few of the rows it reads), and says where to go on from.
    pub fn scan(
        &self,
        projection: &str,
        after: Option<&str>,
        lookup: Option<(&str, &serde_json::Value)>,
        limit: usize,
        mut keep: impl FnMut(&str, &Row) -> bool,
    ) -> Result<Scan, StoreError> {
        let table = self.txn.open_table(ROWS)?;
        let mut rows = Vec::new();
        let (mut read, deadline) = (0usize, std::time::Instant::now() + SCAN_MAX_TIME);
        let mut stopped_at: Option<String> = None;
        let mut budget_spent = false;
        let mut consider = |key: &str, bytes: &[u8]| -> Result<bool, StoreError> {
            if Some(key) == after {
                return Ok(true);
            }
            let row: Row = serde_json::from_slice(bytes)?;
            if keep(key, &row) {
                rows.push((key.to_string(), row));
            }
            read += 1;
            let budget_left =
                read < SCAN_MAX_ROWS && (read % 1024 != 0 || std::time::Instant::now() < deadline);
            if rows.len() < limit && budget_left {
                return Ok(true);
            }
            budget_spent = !budget_left && rows.len() < limit;
            stopped_at = Some(key.to_string());
            Ok(false)
        };
        match self.index_lookup(projection, lookup)? {
            Some((field, value)) => {
                let index = self.txn.open_table(INDEX)?;
                let from = (
                    projection,
                    field.as_str(),
                    value.as_str(),
                    after.unwrap_or(""),
                );
                for entry in index.range(from..)? {
                    let (entry, _) = entry?;
                    let (p, f, v, key) = entry.value();
                    if p != projection || f != field || v != value {
                        break;
                    }
                    let Some(bytes) = table.get((projection, key))? else {
                        continue;
                    };
                    if !consider(key, bytes.value())? {
                        break;
                    }
                }
            }
            None => {
                for entry in table.range((projection, after.unwrap_or(""))..)? {
                    let (key, value) = entry?;
                    let (p, key) = key.value();
                    if p != projection {
                        break;
                    }
                    if !consider(key, value.value())? {
                        break;
                    }
                }
            }
        }
        Ok(Scan {
            rows,
            resume_after: stopped_at,
            budget_spent,
        })
    }

    /// The field and index value a lookup reads the index with, when the index
    /// covers it and is complete (a deferred one is not until its replay ends).
    fn index_lookup(
        &self,
        projection: &str,
        lookup: Option<(&str, &serde_json::Value)>,
    ) -> Result<Option<(String, String)>, StoreError> {
        let Some((field, value)) = lookup else {
            return Ok(None);
        };
        if !self.store.is_indexed(projection, field)
            || index::is_deferred(&self.txn.open_table(META)?)?
        {
            return Ok(None);
        }
        Ok(index_value(value).map(|value| (field.to_string(), value)))
    }

    /// The changes of every record after `since`, if the log still has them all.
    pub fn missed(&self, since: &Position) -> Result<Missed, StoreError> {
        let log_start = match self.txn.open_table(META)?.get(LOG_START)? {
            Some(text) => position_from_bytes(text.value().as_bytes())?,
            None => Position::default(),
        };
        if !since.covers(&log_start) {
            return Ok(Missed::TooOld);
        }
        if !self.position()?.covers(since) {
            return Ok(Missed::Ahead);
        }
        // The newest batch the client had already seen all of: read after it.
        let mut from = 0;
        for entry in self.txn.open_table(LOG_BATCHES)?.iter()?.rev() {
            let (last_seq, position) = entry?;
            if since.covers(&position_from_bytes(position.value())?) {
                from = last_seq.value() + 1;
                break;
            }
        }
        let mut changes = Vec::new();
        for entry in self.txn.open_table(CHANGES)?.range(from..)? {
            let (_, value) = entry?;
            let change: Change = serde_json::from_slice(value.value())?;
            let source = &change.source;
            if !since.has_read(&source.topic, source.partition, source.offset) {
                changes.push(change);
            }
        }
        Ok(Missed::Changes(changes))
    }
}
