//! The projection store: rows, their change log and the source offsets, kept
//! together in one embedded redb database so that a batch of events, the row
//! changes it caused and the offsets it reached commit in one transaction.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::projection::{Row, RowChange, RowOp};

/// (projection, key) → [`StoredRow`] as JSON.
const ROWS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("rows");
/// (projection, version) → [`Change`] as JSON.
const CHANGES: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("changes");
/// projection → its latest version.
const VERSIONS: TableDefinition<&str, u64> = TableDefinition::new("versions");
/// (topic, partition) → the next offset to read.
const OFFSETS: TableDefinition<(&str, i32), i64> = TableDefinition::new("offsets");
/// Store-wide settings, such as the definition hash the rows were built with.
const META: TableDefinition<&str, &str> = TableDefinition::new("meta");

const DEFINITION_HASH: &str = "definition_hash";

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

/// A row with the projection version at which it last changed (its ETag).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredRow {
    pub version: u64,
    pub row: Row,
}

/// One committed change, as the change feed and change log carry it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub projection: String,
    pub version: u64,
    pub key: String,
    #[serde(flatten)]
    pub op: RowOp,
    /// When the event that caused it was produced (ms since the epoch), if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_time_ms: Option<i64>,
    /// The row before this change (none if it did not exist). Kept in the change log
    /// only, so that a client resuming from a version can be told exactly which rows
    /// it saw then; the live feed leaves it out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<Row>,
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

/// Changes a client missed, or word that the log no longer reaches back that far.
#[derive(Debug, Clone, PartialEq)]
pub enum Missed {
    Changes(Vec<Change>),
    /// The oldest kept change is newer than the client's version + 1: take a snapshot.
    TooOld {
        oldest_kept: u64,
    },
}

pub struct Store {
    db: Database,
    change_log_length: u64,
}

impl Store {
    /// Opens (or creates) the store at `path`. When it was built with another
    /// projection definition it is wiped, so the runtime rebuilds it from the earliest offsets.
    pub fn open(
        path: &Path,
        definition_hash: &str,
        change_log_length: u64,
    ) -> Result<(Store, Opened), StoreError> {
        let db = Database::create(path)?;
        let txn = db.begin_write()?;
        let opened = {
            let mut meta = txn.open_table(META)?;
            let stored = meta.get(DEFINITION_HASH)?.map(|v| v.value().to_string());
            let opened = match stored.as_deref() {
                None => Opened::Empty,
                Some(hash) if hash == definition_hash => Opened::Resumed,
                Some(_) => Opened::Rebuilt,
            };
            meta.insert(DEFINITION_HASH, definition_hash)?;
            opened
        };
        if opened == Opened::Rebuilt {
            txn.delete_table(ROWS)?;
            txn.delete_table(CHANGES)?;
            txn.delete_table(VERSIONS)?;
            txn.delete_table(OFFSETS)?;
        }
        // Create every table, so that readers never meet a missing one.
        txn.open_table(ROWS)?;
        txn.open_table(CHANGES)?;
        txn.open_table(VERSIONS)?;
        txn.open_table(OFFSETS)?;
        txn.commit()?;
        Ok((
            Store {
                db,
                change_log_length: change_log_length.max(1),
            },
            opened,
        ))
    }

    /// The next offset to read for every partition the store has seen.
    pub fn offsets(&self) -> Result<BTreeMap<(String, i32), i64>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(OFFSETS)?;
        let mut offsets = BTreeMap::new();
        for entry in table.iter()? {
            let (key, value) = entry?;
            let (topic, partition) = key.value();
            offsets.insert((topic.to_string(), partition), value.value());
        }
        Ok(offsets)
    }

    /// One row, with its version.
    pub fn row(&self, projection: &str, key: &str) -> Result<Option<StoredRow>, StoreError> {
        Ok(self.row_at_version(projection, key)?.1)
    }

    /// One row and the projection's version, read together.
    pub fn row_at_version(
        &self,
        projection: &str,
        key: &str,
    ) -> Result<(u64, Option<StoredRow>), StoreError> {
        let txn = self.db.begin_read()?;
        let version = version_in(&txn, projection)?;
        let row = match txn.open_table(ROWS)?.get((projection, key))? {
            Some(bytes) => Some(serde_json::from_slice(bytes.value())?),
            None => None,
        };
        Ok((version, row))
    }

    /// The latest version of a projection (0 before its first change).
    pub fn version(&self, projection: &str) -> Result<u64, StoreError> {
        version_in(&self.db.begin_read()?, projection)
    }

    /// Every row of a projection after `after` (a key cursor), at most `limit` of
    /// them, with the projection's version in the same consistent read.
    pub fn rows(
        &self,
        projection: &str,
        after: Option<&str>,
        limit: usize,
        mut keep: impl FnMut(&StoredRow) -> bool,
    ) -> Result<(u64, Vec<(String, StoredRow)>), StoreError> {
        let txn = self.db.begin_read()?;
        let version = version_in(&txn, projection)?;
        let table = txn.open_table(ROWS)?;
        let mut rows = Vec::new();
        for entry in table.range((projection, after.unwrap_or(""))..)? {
            let (key, value) = entry?;
            let (p, k) = key.value();
            if p != projection {
                break;
            }
            if Some(k) == after {
                continue;
            }
            let row: StoredRow = serde_json::from_slice(value.value())?;
            if keep(&row) {
                rows.push((k.to_string(), row));
                if rows.len() >= limit {
                    break;
                }
            }
        }
        Ok((version, rows))
    }

    /// The changes of a projection after `version`, if the change log still has them all.
    pub fn changes_since(&self, projection: &str, version: u64) -> Result<Missed, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(CHANGES)?;
        let latest = version_in(&txn, projection)?;
        if version >= latest {
            return Ok(Missed::Changes(Vec::new()));
        }
        let mut changes = Vec::new();
        for entry in table.range((projection, version + 1)..=(projection, u64::MAX))? {
            let (_, value) = entry?;
            changes.push(serde_json::from_slice::<Change>(value.value())?);
        }
        match changes.first() {
            Some(first) if first.version == version + 1 => Ok(Missed::Changes(changes)),
            first => Ok(Missed::TooOld {
                oldest_kept: first.map(|c| c.version).unwrap_or(latest + 1),
            }),
        }
    }

    /// Starts a batch: row changes and offsets that commit together.
    pub fn batch(&self) -> Result<Batch<'_>, StoreError> {
        Ok(Batch {
            store: self,
            txn: self.db.begin_write()?,
            rows: HashMap::new(),
            read: Default::default(),
            changes: Vec::new(),
            versions: BTreeMap::new(),
            offsets: BTreeMap::new(),
        })
    }
}

/// A projection's latest version as a read transaction sees it.
fn version_in(txn: &redb::ReadTransaction, projection: &str) -> Result<u64, StoreError> {
    Ok(txn
        .open_table(VERSIONS)?
        .get(projection)?
        .map(|v| v.value())
        .unwrap_or(0))
}

/// An open write transaction. Reads see the batch's own writes, so every event of a
/// batch builds on the ones before it. Writes are kept in memory and written in
/// one pass at commit, so a hot row changed by many events is written once.
pub struct Batch<'s> {
    store: &'s Store,
    txn: redb::WriteTransaction,
    /// Rows the batch changed (`None`: deleted).
    rows: HashMap<(String, String), Option<StoredRow>>,
    /// Rows read from the store in this batch: a rule reads a row and the change
    /// log then keeps it as the change's previous row, parsed once.
    read: std::cell::RefCell<HashMap<(String, String), Option<Row>>>,
    changes: Vec<Change>,
    versions: BTreeMap<String, u64>,
    offsets: BTreeMap<(String, i32), i64>,
}

impl Batch<'_> {
    /// The current row, as the batch has left it so far.
    pub fn row(&self, projection: &str, key: &str) -> Result<Option<Row>, StoreError> {
        let id = (projection.to_string(), key.to_string());
        if let Some(row) = self.rows.get(&id) {
            return Ok(row.as_ref().map(|r| r.row.clone()));
        }
        if let Some(row) = self.read.borrow().get(&id) {
            return Ok(row.clone());
        }
        let table = self.txn.open_table(ROWS)?;
        let row = match table.get((projection, key))? {
            Some(bytes) => Some(serde_json::from_slice::<StoredRow>(bytes.value())?.row),
            None => None,
        };
        self.read.borrow_mut().insert(id, row.clone());
        Ok(row)
    }

    /// Records the changes of one event, each under the next version of its projection.
    pub fn apply(
        &mut self,
        changes: Vec<RowChange>,
        event_time_ms: Option<i64>,
    ) -> Result<(), StoreError> {
        for change in changes {
            let version = match self.versions.get(&change.projection) {
                Some(v) => *v,
                None => self
                    .txn
                    .open_table(VERSIONS)?
                    .get(change.projection.as_str())?
                    .map(|v| v.value())
                    .unwrap_or(0),
            } + 1;
            self.versions.insert(change.projection.clone(), version);
            let stored = match &change.op {
                RowOp::Upsert(row) => Some(StoredRow {
                    version,
                    row: row.clone(),
                }),
                RowOp::Delete => None,
            };
            let previous = self.row(&change.projection, &change.key)?;
            self.rows
                .insert((change.projection.clone(), change.key.clone()), stored);
            self.changes.push(Change {
                projection: change.projection,
                version,
                key: change.key,
                op: change.op,
                event_time_ms,
                previous,
            });
        }
        Ok(())
    }

    /// Records that `next_offset` is the next message to read from a partition.
    pub fn set_offset(&mut self, topic: &str, partition: i32, next_offset: i64) {
        self.offsets
            .insert((topic.to_string(), partition), next_offset);
    }

    /// Writes everything, trims the change logs and commits; returns the committed
    /// changes for the feed.
    pub fn commit(self) -> Result<Vec<Change>, StoreError> {
        {
            let mut rows = self.txn.open_table(ROWS)?;
            for ((projection, key), row) in &self.rows {
                match row {
                    Some(row) => {
                        rows.insert(
                            (projection.as_str(), key.as_str()),
                            serde_json::to_vec(row)?.as_slice(),
                        )?;
                    }
                    None => {
                        rows.remove((projection.as_str(), key.as_str()))?;
                    }
                }
            }
            let mut log = self.txn.open_table(CHANGES)?;
            for change in &self.changes {
                log.insert(
                    (change.projection.as_str(), change.version),
                    serde_json::to_vec(change)?.as_slice(),
                )?;
            }
            let mut versions = self.txn.open_table(VERSIONS)?;
            for (projection, latest) in &self.versions {
                versions.insert(projection.as_str(), *latest)?;
                if let Some(last_dropped) = latest.checked_sub(self.store.change_log_length) {
                    log.retain_in(
                        (projection.as_str(), 0)..=(projection.as_str(), last_dropped),
                        |_, _| false,
                    )?;
                }
            }
            let mut offsets = self.txn.open_table(OFFSETS)?;
            for ((topic, partition), next) in &self.offsets {
                offsets.insert((topic.as_str(), *partition), *next)?;
            }
        }
        self.txn.commit()?;
        let mut changes = self.changes;
        for change in &mut changes {
            change.previous = None;
        }
        Ok(changes)
    }
}
