//! The projection store: rows, their change log, an index over the fields that
//! access rules compare, and the source offsets, kept together in one embedded redb
//! database so that a batch of events, the row changes it caused and the offsets it
//! reached commit in one transaction.

mod position;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Mutex;

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};

pub use position::{Position, PositionCodec, PositionError};

use crate::projection::{links_of, Applied, LinkKey, Row, RowChange, RowOp, Rows, Stored};

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
/// Where the change log starts: it holds every change of every record after it.
const LOG_START: &str = "log_start";
const SEQ: &str = "seq";
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
    redb::CommitError
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
}

pub struct Store {
    db: Database,
    layout: Layout,
    codec: PositionCodec,
    /// The committed position, kept in memory so a batch starts from it.
    position: Mutex<Position>,
}

impl Store {
    /// Opens (or creates) the store at `path`. When it was built with another
    /// definition or table layout it is wiped, so the runtime rebuilds it from the
    /// earliest offsets.
    pub fn open(path: &Path, layout: Layout) -> Result<(Store, Opened), StoreError> {
        let db = Database::create(path)?;
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
        }
        // Create every table, so that readers never meet a missing one.
        txn.open_table(ROWS)?;
        txn.open_table(HELD)?;
        txn.open_table(EMBEDS)?;
        txn.open_table(CHANGES)?;
        txn.open_table(LOG_BATCHES)?;
        txn.open_table(INDEX)?;
        txn.open_table(COUNTERS)?;
        let position = offsets_in(&txn.open_table(OFFSETS)?)?;
        txn.commit()?;
        let codec = PositionCodec::new(&layout.definition_hash, layout.topics.clone());
        let store = Store {
            db,
            codec,
            position: Mutex::new(position),
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
        self.position.lock().expect("position lock").clone()
    }

    /// The next offset to read for every partition the store has seen.
    pub fn offsets(&self) -> Result<BTreeMap<(String, i32), i64>, StoreError> {
        Ok(self.position().offsets().clone())
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

    /// One row.
    pub fn row(&self, projection: &str, key: &str) -> Result<Option<Row>, StoreError> {
        self.view()?.row(projection, key)
    }

    /// Starts a batch: row changes and offsets that commit together.
    pub fn batch(&self) -> Result<Batch<'_>, StoreError> {
        let txn = self.db.begin_write()?;
        let seq = txn.open_table(COUNTERS)?.get(SEQ)?.map(|v| v.value());
        let none_held = txn.open_table(HELD)?.is_empty()?;
        Ok(Batch {
            none_held,
            links: BTreeMap::new(),
            store: self,
            txn,
            rows: HashMap::new(),
            read: Default::default(),
            held: Default::default(),
            changes: Vec::new(),
            position: self.position(),
            record: None,
            record_position: None,
            seq: seq.unwrap_or(0),
        })
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
pub struct View<'s> {
    store: &'s Store,
    txn: redb::ReadTransaction,
}

impl View<'_> {
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
        mut keep: impl FnMut(&str, &Row) -> bool,
    ) -> Result<Vec<(String, Row)>, StoreError> {
        let table = self.txn.open_table(ROWS)?;
        let mut rows = Vec::new();
        let mut consider = |key: &str, bytes: &[u8]| -> Result<bool, StoreError> {
            if Some(key) == after {
                return Ok(true);
            }
            let row: Row = serde_json::from_slice(bytes)?;
            if keep(key, &row) {
                rows.push((key.to_string(), row));
            }
            Ok(rows.len() < limit)
        };
        let indexed = lookup.and_then(|(field, value)| {
            let value = index_value(value)?;
            self.store
                .is_indexed(projection, field)
                .then(|| (field.to_string(), value))
        });
        match indexed {
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
        Ok(rows)
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

/// An open write transaction. Reads see the batch's own writes, so every event of a
/// batch builds on the ones before it. Writes are kept in memory and written in
/// one pass at commit, so a hot row changed by many events is written once.
pub struct Batch<'s> {
    store: &'s Store,
    txn: redb::WriteTransaction,
    /// Rows the batch changed (`None`: deleted).
    rows: HashMap<(String, String), Option<Row>>,
    /// Rows as they were before the batch: a rule reads a row, the change log keeps
    /// it as the change's previous row, and the index entries it had are removed.
    read: std::cell::RefCell<HashMap<(String, String), Option<Row>>>,
    /// Held rows read or written by the batch (`None`: none), written at commit.
    held: std::cell::RefCell<HashMap<(String, String), Option<Row>>>,
    /// Reverse-index entries the batch added (`true`) or removed (`false`), written
    /// at commit like rows, and read through by [`Rows::embedders`].
    links: BTreeMap<LinkKey, bool>,
    /// Whether the store held no row when the batch began: then only the batch's
    /// own held rows need looking at (most specs never hold one).
    none_held: bool,
    changes: Vec<Change>,
    /// The position after the records read so far.
    position: Position,
    /// The record whose changes are being applied.
    record: Option<Source>,
    /// `position` as clients see it, made once per record that changes something.
    record_position: Option<String>,
    seq: u64,
}

impl Batch<'_> {
    /// The current row, as the batch has left it so far.
    pub fn row(&self, projection: &str, key: &str) -> Result<Option<Row>, StoreError> {
        let id = (projection.to_string(), key.to_string());
        if let Some(row) = self.rows.get(&id) {
            return Ok(row.clone());
        }
        if let Some(row) = self.read.borrow().get(&id) {
            return Ok(row.clone());
        }
        let table = self.txn.open_table(ROWS)?;
        let row = match table.get((projection, key))? {
            Some(bytes) => Some(serde_json::from_slice::<Row>(bytes.value())?),
            None => None,
        };
        self.read.borrow_mut().insert(id, row.clone());
        Ok(row)
    }

    /// The row, held or served, as the batch has left it so far.
    pub fn stored(&self, projection: &str, key: &str) -> Result<Option<Stored>, StoreError> {
        if let Some(row) = self.row(projection, key)? {
            return Ok(Some(Stored::Served(row)));
        }
        let id = (projection.to_string(), key.to_string());
        if let Some(row) = self.held.borrow().get(&id) {
            return Ok(row.clone().map(Stored::Held));
        }
        if self.none_held {
            return Ok(None);
        }
        let row = match self.txn.open_table(HELD)?.get((projection, key))? {
            Some(bytes) => Some(serde_json::from_slice::<Row>(bytes.value())?),
            None => None,
        };
        self.held.borrow_mut().insert(id, row.clone());
        Ok(row.map(Stored::Held))
    }

    /// Writes what one event changed: its served changes (see [`Batch::apply`]),
    /// its held rows and its reverse-index entries.
    pub fn apply_event(
        &mut self,
        applied: Applied,
        event_time_ms: Option<i64>,
    ) -> Result<(), StoreError> {
        {
            let mut held = self.held.borrow_mut();
            for change in applied.held {
                held.insert((change.projection, change.key), change.row);
            }
        }
        self.links
            .extend(applied.links.into_iter().map(|link| link.into_entry()));
        self.apply(applied.changes, event_time_ms)
    }

    /// A record was read from a partition: the changes applied next are its own,
    /// and the batch's offsets move past it whether it changes anything or not.
    pub fn read_record(&mut self, topic: &str, partition: i32, offset: i64) {
        self.position.advance(topic, partition, offset + 1);
        self.record = Some(Source {
            topic: topic.to_string(),
            partition,
            offset,
        });
        self.record_position = None;
    }

    /// Records the changes of the current record.
    pub fn apply(
        &mut self,
        changes: Vec<RowChange>,
        event_time_ms: Option<i64>,
    ) -> Result<(), StoreError> {
        let Some(source) = self.record.clone() else {
            debug_assert!(false, "apply before read_record");
            return Ok(());
        };
        for change in changes {
            let previous = self.row(&change.projection, &change.key)?;
            let row = match &change.op {
                RowOp::Upsert(row) => Some(row.clone()),
                RowOp::Delete => None,
            };
            self.rows
                .insert((change.projection.clone(), change.key.clone()), row);
            let position = self
                .record_position
                .get_or_insert_with(|| self.store.codec.encode(&self.position))
                .clone();
            self.seq += 1;
            self.changes.push(Change {
                seq: self.seq,
                projection: change.projection,
                key: change.key,
                op: change.op,
                previous,
                source: source.clone(),
                position,
                event_time_ms,
            });
        }
        Ok(())
    }

    /// Writes everything, trims the change log and commits; returns the committed
    /// changes for the live feed.
    pub fn commit(self) -> Result<Vec<Change>, StoreError> {
        {
            let mut rows = self.txn.open_table(ROWS)?;
            let mut index = self.txn.open_table(INDEX)?;
            let read = self.read.borrow();
            for ((projection, key), row) in &self.rows {
                let id = (projection.as_str(), key.as_str());
                match row {
                    Some(row) => rows.insert(id, serde_json::to_vec(row)?.as_slice())?,
                    None => rows.remove(id)?,
                };
                let Some(fields) = self.store.layout.indexed.get(projection) else {
                    continue;
                };
                let before = read
                    .get(&(projection.clone(), key.clone()))
                    .and_then(Option::as_ref);
                for field in fields {
                    let old = before.and_then(|r| r.get(field)).and_then(index_value);
                    let new = row
                        .as_ref()
                        .and_then(|r| r.get(field))
                        .and_then(index_value);
                    if old == new {
                        continue;
                    }
                    if let Some(old) = old {
                        index.remove((
                            projection.as_str(),
                            field.as_str(),
                            old.as_str(),
                            key.as_str(),
                        ))?;
                    }
                    if let Some(new) = new {
                        index.insert(
                            (
                                projection.as_str(),
                                field.as_str(),
                                new.as_str(),
                                key.as_str(),
                            ),
                            (),
                        )?;
                    }
                }
            }
            let mut embeds = self.txn.open_table(EMBEDS)?;
            for ((target, target_key, embedder, embed, key), linked) in &self.links {
                let entry = (
                    target.as_str(),
                    target_key.as_str(),
                    embedder.as_str(),
                    embed.as_str(),
                    key.as_str(),
                );
                match linked {
                    true => embeds.insert(entry, ())?,
                    false => embeds.remove(entry)?,
                };
            }
            let mut held = self.txn.open_table(HELD)?;
            for ((projection, key), row) in self.held.borrow().iter() {
                let id = (projection.as_str(), key.as_str());
                match row {
                    Some(row) => held.insert(id, serde_json::to_vec(row)?.as_slice())?,
                    None => held.remove(id)?,
                };
            }
            let mut offsets = self.txn.open_table(OFFSETS)?;
            for ((topic, partition), next) in self.position.offsets() {
                offsets.insert((topic.as_str(), *partition), *next)?;
            }
            let mut log = self.txn.open_table(CHANGES)?;
            for change in &self.changes {
                log.insert(change.seq, serde_json::to_vec(change)?.as_slice())?;
            }
            let mut batches = self.txn.open_table(LOG_BATCHES)?;
            if !self.changes.is_empty() {
                batches.insert(self.seq, position_to_bytes(&self.position)?.as_slice())?;
            }
            self.txn.open_table(COUNTERS)?.insert(SEQ, self.seq)?;
            // Trim whole batches, oldest first, so that where the log starts is
            // always a position: the one after the last batch dropped.
            let mut log_start = None;
            while log.len()? > self.store.layout.change_log_length {
                let Some((last_seq, position)) = batches
                    .pop_first()?
                    .map(|(k, v)| (k.value(), v.value().to_vec()))
                else {
                    break;
                };
                log.retain_in(..=last_seq, |_, _| false)?;
                log_start = Some(position);
            }
            if let Some(position) = log_start {
                let text = String::from_utf8(position).unwrap_or_default();
                self.txn
                    .open_table(META)?
                    .insert(LOG_START, text.as_str())?;
            }
        }
        self.txn.commit()?;
        *self.store.position.lock().expect("position lock") = self.position;
        Ok(self.changes)
    }
}

impl Rows for Batch<'_> {
    type Error = StoreError;

    fn stored(&self, projection: &str, key: &str) -> Result<Option<Stored>, StoreError> {
        Batch::stored(self, projection, key)
    }

    fn embedders(
        &self,
        projection: &str,
        key: &str,
        embedder: &str,
        embed: &str,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        // The batch's own entries for this row, over what the table holds.
        let pending: Vec<(&str, bool)> =
            links_of(&self.links, projection, key, embedder, embed).collect();
        let removed = pending.iter().filter(|(_, linked)| !linked).count();
        let mut keys = std::collections::BTreeSet::new();
        let table = self.txn.open_table(EMBEDS)?;
        for entry in table.range((projection, key, embedder, embed, "")..)? {
            let (entry, _) = entry?;
            let (t, k, e, name, embedder_key) = entry.value();
            if (t, k, e, name) != (projection, key, embedder, embed)
                || keys.len() == limit + removed
            {
                break;
            }
            keys.insert(embedder_key.to_string());
        }
        for (embedder_key, linked) in pending {
            match linked {
                true => keys.insert(embedder_key.to_string()),
                false => keys.remove(embedder_key),
            };
        }
        Ok(keys.into_iter().take(limit).collect())
    }
}
