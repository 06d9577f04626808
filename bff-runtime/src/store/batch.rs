//! Batches: the row changes, held rows, reverse-index entries and offsets of a run
//! of events, kept in memory while the events apply, then written in one
//! transaction.
//!
//! Applying and writing are two steps so they can run on two cores: a batch reads
//! the store as of the last commit plus, while that one is still being written, the
//! batch before it ([`Store::batch_after`]), so ingest applies the next batch while
//! another thread writes and syncs the previous one ([`Store::write`]). Batches are
//! written in order, one at a time.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use redb::{ReadableDatabase, ReadableTableMetadata};

use super::{
    index_value, position_to_bytes, Change, Source, Store, StoreError, CHANGES, COUNTERS, EMBEDS,
    HELD, INDEX, LOG_BATCHES, LOG_START, META, OFFSETS, ROWS, SEQ,
};
use crate::projection::{links_of, Applied, LinkKey, Row, RowChange, Rows, Stored};
use crate::store::Position;

/// A batch being filled. Reads see the batch's own writes, so every event of a
/// batch builds on the ones before it; a hot row changed by many events is written
/// once.
pub struct Batch<'s> {
    store: &'s Store,
    /// The store as of the last commit when the batch began.
    committed: Committed,
    /// The batch before, which `snapshot` may not include yet.
    before: Option<Arc<Sealed>>,
    /// Rows as they were before the batch: a rule reads a row, the change log keeps
    /// it as the change's previous row, and the index entries it had are removed.
    read: RefCell<ByRow<Option<Row>>>,
    /// Held rows read or written by the batch (`None`: none), written at commit.
    held: RefCell<ByRow<Option<Row>>>,
    /// Whether no row was held when the batch began: then only the batch's own
    /// held rows need looking at (most specs never hold one).
    none_held: bool,
    writes: Sealed,
    /// Whether a row changed again within the batch keeps one change, from the row
    /// before the batch to the row now (see [`Batch::coalescing`]).
    coalesce: bool,
    /// The record whose changes are being applied.
    record: Option<Source>,
    /// `position` as clients see it, made once per record that changes something.
    record_position: Option<String>,
}

/// The tables a batch reads, opened once from one read transaction (opening a
/// table per lookup was a tenth of a replay's reads).
struct Committed {
    rows: redb::ReadOnlyTable<(&'static str, &'static str), &'static [u8]>,
    held: redb::ReadOnlyTable<(&'static str, &'static str), &'static [u8]>,
    embeds: redb::ReadOnlyTable<
        (
            &'static str,
            &'static str,
            &'static str,
            &'static str,
            &'static str,
        ),
        (),
    >,
}

/// A filled batch, ready to write; shared with the batch after it until written.
#[derive(Debug, Default)]
pub struct Sealed {
    /// Rows the batch changed: where in `changes` the last change of each is (a
    /// row is kept once, in its change).
    rows: ByRow<usize>,
    /// Rows as they were before the batch, for the index entries to remove (a
    /// coalesced row's is its change's `previous` instead).
    read: ByRow<Option<Row>>,
    held: ByRow<Option<Row>>,
    /// Reverse-index entries added (`true`) or removed (`false`).
    links: BTreeMap<LinkKey, bool>,
    /// In commit order; `None` where a change was coalesced into a later one.
    changes: Vec<Option<Change>>,
    /// The position after the batch's records.
    position: Position,
    /// The last commit sequence number it uses.
    seq: u64,
    /// Leaves the index to the end of the replay (see [`super::index`]).
    defer_index: bool,
    /// The change log starts after this batch instead of holding its changes.
    unlogged: bool,
}

impl Sealed {
    /// The committed changes, for the live feed.
    pub fn into_changes(self) -> Vec<Change> {
        self.changes.into_iter().flatten().collect()
    }

    pub fn changes(&self) -> impl Iterator<Item = &Change> {
        self.changes.iter().flatten()
    }

    fn row(&self, projection: &str, key: &str) -> Option<Option<&Row>> {
        Some(self.last_change(projection, key)?.op.row())
    }

    fn last_change(&self, projection: &str, key: &str) -> Option<&Change> {
        let &i = self.rows.get(projection, key)?;
        self.changes[i].as_ref()
    }
}

impl Store {
    /// Starts a batch on what is committed.
    pub fn batch(&self) -> Result<Batch<'_>, StoreError> {
        self.batch_after(None)
    }

    /// Starts a batch that follows `before`, which may still be being written.
    pub fn batch_after(&self, before: Option<Arc<Sealed>>) -> Result<Batch<'_>, StoreError> {
        let snapshot = self.db.begin_read()?;
        let committed_seq = snapshot.open_table(COUNTERS)?.get(SEQ)?.map(|v| v.value());
        let committed = Committed {
            rows: snapshot.open_table(ROWS)?,
            held: snapshot.open_table(HELD)?,
            embeds: snapshot.open_table(EMBEDS)?,
        };
        let none_held = committed.held.is_empty()?
            && before
                .as_ref()
                .is_none_or(|b| b.held.iter().all(|(_, _, row)| row.is_none()));
        let (seq, position) = match &before {
            Some(before) => (before.seq, before.position.clone()),
            None => (committed_seq.unwrap_or(0), self.position()),
        };
        Ok(Batch {
            store: self,
            committed,
            before,
            read: Default::default(),
            held: Default::default(),
            none_held,
            writes: Sealed {
                position,
                seq,
                ..Sealed::default()
            },
            coalesce: false,
            record: None,
            record_position: None,
        })
    }

    /// Writes a sealed batch, trims the change log and commits (with a sync).
    pub fn write(&self, batch: &Sealed) -> Result<(), StoreError> {
        self.write_as(batch, redb::Durability::Immediate)
    }

    /// Writes a sealed batch; a commit with [`redb::Durability::None`] is seen by
    /// every reader at once but reaches the disk only with the next synced one
    /// (a crash before it returns the store to the last synced batch, whose
    /// offsets it replays from). Replays skip the sync of most batches: it was
    /// the store writer's wait, not its work.
    pub fn write_as(&self, batch: &Sealed, durability: redb::Durability) -> Result<(), StoreError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(durability)?;
        let index_kept = !(batch.defer_index || self.index_deferred());
        if batch.defer_index && !self.index_deferred() {
            super::index::defer(&txn)?;
        }
        {
            self.write_rows(&txn, batch, index_kept)?;
            let mut embeds = txn.open_table(EMBEDS)?;
            for ((target, target_key, embedder, embed, key), linked) in &batch.links {
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
            let mut held = txn.open_table(HELD)?;
            for (projection, key, row) in batch.held.iter() {
                match row {
                    Some(row) => {
                        held.insert((projection, key), serde_json::to_vec(row)?.as_slice())?
                    }
                    None => held.remove((projection, key))?,
                };
            }
            let mut offsets = txn.open_table(OFFSETS)?;
            for ((topic, partition), next) in batch.position.offsets() {
                offsets.insert((topic.as_str(), *partition), *next)?;
            }
            txn.open_table(COUNTERS)?.insert(SEQ, batch.seq)?;
            self.write_log(&txn, batch)?;
        }
        txn.commit()?;
        if batch.defer_index {
            self.index_deferred
                .store(true, std::sync::atomic::Ordering::Release);
        }
        *self.position.lock() = batch.position.clone();
        Ok(())
    }

    /// Writes the rows a batch changed and, unless it is deferred, their index
    /// entries (those of the row before the batch out, those of the row now in).
    fn write_rows(
        &self,
        txn: &redb::WriteTransaction,
        batch: &Sealed,
        index_kept: bool,
    ) -> Result<(), StoreError> {
        let mut rows = txn.open_table(ROWS)?;
        let mut index = txn.open_table(INDEX)?;
        let mut encoded = Vec::new();
        for (projection, key, &i) in batch.rows.iter() {
            let Some(change) = &batch.changes[i] else {
                continue; // not reached: a row's last change is never coalesced away
            };
            let row = change.op.row();
            match row {
                Some(row) => {
                    encoded.clear();
                    serde_json::to_writer(&mut encoded, row)?;
                    rows.insert((projection, key), encoded.as_slice())?
                }
                None => rows.remove((projection, key))?,
            };
            let Some(fields) = self.layout.indexed.get(projection).filter(|_| index_kept) else {
                continue;
            };
            let before = match batch.read.get(projection, key) {
                Some(before) => before.as_ref(),
                None => change.previous.as_ref(),
            };
            for field in fields {
                let old = before.and_then(|r| r.get(field)).and_then(index_value);
                let new = row.and_then(|r| r.get(field)).and_then(index_value);
                if old == new {
                    continue;
                }
                if let Some(old) = old {
                    index.remove((projection, field.as_str(), old.as_str(), key))?;
                }
                if let Some(new) = new {
                    index.insert((projection, field.as_str(), new.as_str(), key), ())?;
                }
            }
        }
        Ok(())
    }

    /// Syncs every batch written so far to the disk (an empty synced commit).
    pub fn sync(&self) -> Result<(), StoreError> {
        self.db.begin_write()?.commit()?;
        Ok(())
    }

    /// Appends a batch's changes to the change log and trims it to its length,
    /// whole batches at a time, oldest first, so that where the log starts is
    /// always a position: the one after the last batch dropped.
    fn write_log(&self, txn: &redb::WriteTransaction, batch: &Sealed) -> Result<(), StoreError> {
        let mut log = txn.open_table(CHANGES)?;
        let mut batches = txn.open_table(LOG_BATCHES)?;
        let mut log_start = None;
        let count = batch.changes().count();
        if batch.unlogged || count as u64 > self.layout.change_log_length {
            // Unlogged, or trimming would drop this whole batch and every one
            // before it: the log starts after this batch, and its changes need not
            // be encoded at all.
            log.retain(|_, _| false)?;
            batches.retain(|_, _| false)?;
            log_start = Some(position_to_bytes(&batch.position)?);
        } else {
            let mut encoded = Vec::new();
            for change in batch.changes() {
                encoded.clear();
                serde_json::to_writer(&mut encoded, change)?;
                log.insert(change.seq, encoded.as_slice())?;
            }
            if count > 0 {
                batches.insert(batch.seq, position_to_bytes(&batch.position)?.as_slice())?;
            }
        }
        while log.len()? > self.layout.change_log_length {
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
            txn.open_table(META)?.insert(LOG_START, text.as_str())?;
        }
        Ok(())
    }
}

impl<'s> Batch<'s> {
    /// A row changed again within the batch keeps one change, from the row before
    /// the batch to the row now, at the position of its latest record. For replay
    /// batches: their changes reach no client that waits for them, a replayed order
    /// is placed, paid and shipped within one batch, and each change kept holds
    /// two rows in memory until the batch is written.
    pub fn coalescing(self) -> Batch<'s> {
        Batch {
            coalesce: true,
            ..self
        }
    }

    /// Leaves the index to the end of the replay: for replay batches of a store
    /// that was empty when the replay began, or whose index is deferred already;
    /// the replay then ends with [`Store::complete_index`].
    pub fn deferring_index(mut self) -> Batch<'s> {
        self.writes.defer_index = true;
        self
    }

    /// The change log starts after this batch instead of holding its changes: for
    /// a replay's batches before its last, whose changes no client waits for and
    /// which the next batches would trim anyway (the log keeps the last changes).
    pub fn unlogged(&mut self) {
        self.writes.unlogged = true;
    }

    /// How many row changes the batch has recorded so far, those coalesced into
    /// a later one included (an upper bound on what it holds).
    pub fn change_count(&self) -> usize {
        self.writes.changes.len()
    }

    /// The current row, as the batch has left it so far.
    pub fn row(&self, projection: &str, key: &str) -> Result<Option<Row>, StoreError> {
        if let Some(row) = self.writes.row(projection, key) {
            return Ok(row.cloned());
        }
        if let Some(row) = self.read.borrow().get(projection, key) {
            return Ok(row.clone());
        }
        let row = self.row_before_batch(projection, key)?;
        self.read
            .borrow_mut()
            .insert(projection, key.to_string(), row.clone());
        Ok(row)
    }

    /// The row as the batch before left it, or as committed.
    fn row_before_batch(&self, projection: &str, key: &str) -> Result<Option<Row>, StoreError> {
        Ok(
            match self.before.as_ref().and_then(|b| b.row(projection, key)) {
                Some(row) => row.cloned(),
                None => match self.committed.rows.get((projection, key))? {
                    Some(bytes) => Some(serde_json::from_slice::<Row>(bytes.value())?),
                    None => None,
                },
            },
        )
    }

    /// The row before this change: the batch's current row, or when coalescing,
    /// the row before the batch, moved out of the batch (its one change keeps it).
    fn previous_row(&mut self, projection: &str, key: &str) -> Result<Option<Row>, StoreError> {
        if !self.coalesce {
            return self.row(projection, key);
        }
        let earlier = self.writes.rows.get(projection, key).copied();
        if let Some(change) = earlier.and_then(|i| self.writes.changes[i].take()) {
            return Ok(change.previous);
        }
        match self.read.get_mut().remove(projection, key) {
            Some(row) => Ok(row),
            None => self.row_before_batch(projection, key),
        }
    }

    /// The row, held or served, as the batch has left it so far.
    pub fn stored(&self, projection: &str, key: &str) -> Result<Option<Stored>, StoreError> {
        if let Some(row) = self.row(projection, key)? {
            return Ok(Some(Stored::Served(row)));
        }
        if let Some(row) = self.held.borrow().get(projection, key) {
            return Ok(row.clone().map(Stored::Held));
        }
        if self.none_held {
            return Ok(None);
        }
        let row = match self
            .before
            .as_ref()
            .and_then(|b| b.held.get(projection, key))
        {
            Some(row) => row.clone(),
            None => match self.committed.held.get((projection, key))? {
                Some(bytes) => Some(serde_json::from_slice::<Row>(bytes.value())?),
                None => None,
            },
        };
        self.held
            .borrow_mut()
            .insert(projection, key.to_string(), row.clone());
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
                held.insert(&change.projection, change.key, change.row);
            }
        }
        self.writes
            .links
            .extend(applied.links.into_iter().map(|link| link.into_entry()));
        self.apply(applied.changes, event_time_ms)
    }

    /// A record was read from a partition: the changes applied next are its own,
    /// and the batch's offsets move past it whether it changes anything or not.
    pub fn read_record(&mut self, topic: &str, partition: i32, offset: i64) {
        self.writes.position.advance(topic, partition, offset + 1);
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
            let previous = self.previous_row(&change.projection, &change.key)?;
            let writes = &mut self.writes;
            writes
                .rows
                .insert(&change.projection, change.key.clone(), writes.changes.len());
            let position = self
                .record_position
                .get_or_insert_with(|| self.store.codec.encode(&writes.position))
                .clone();
            writes.seq += 1;
            writes.changes.push(Some(Change {
                seq: writes.seq,
                projection: change.projection,
                key: change.key,
                op: change.op,
                previous,
                source: source.clone(),
                position,
                event_time_ms,
            }));
        }
        Ok(())
    }

    /// The batch as it is, ready to write; the batch after it may read through it.
    pub fn seal(self) -> Sealed {
        Sealed {
            read: self.read.into_inner(),
            held: self.held.into_inner(),
            ..self.writes
        }
    }

    /// Writes everything and commits; returns the committed changes for the live feed.
    pub fn commit(self) -> Result<Vec<Change>, StoreError> {
        let store = self.store;
        let sealed = self.seal();
        store.write(&sealed)?;
        Ok(sealed.into_changes())
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
        // The entries of the batch before and of this one, over what the table holds.
        let mut pending: Vec<(&str, bool)> = Vec::new();
        if let Some(before) = &self.before {
            pending.extend(links_of(&before.links, projection, key, embedder, embed));
        }
        pending.extend(links_of(
            &self.writes.links,
            projection,
            key,
            embedder,
            embed,
        ));
        let removed = pending.iter().filter(|(_, linked)| !linked).count();
        let mut keys = BTreeSet::new();
        for entry in self
            .committed
            .embeds
            .range((projection, key, embedder, embed, "")..)?
        {
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

/// Values per row of a batch, found by projection and key without allocating.
#[derive(Debug)]
struct ByRow<V>(HashMap<String, HashMap<String, V>>);

impl<V> Default for ByRow<V> {
    fn default() -> Self {
        ByRow(HashMap::new())
    }
}

impl<V> ByRow<V> {
    fn get(&self, projection: &str, key: &str) -> Option<&V> {
        self.0.get(projection)?.get(key)
    }

    fn insert(&mut self, projection: &str, key: String, value: V) {
        match self.0.get_mut(projection) {
            Some(rows) => {
                rows.insert(key, value);
            }
            None => {
                self.0
                    .insert(projection.to_string(), HashMap::from([(key, value)]));
            }
        }
    }

    fn remove(&mut self, projection: &str, key: &str) -> Option<V> {
        self.0.get_mut(projection)?.remove(key)
    }

    fn iter(&self) -> impl Iterator<Item = (&str, &str, &V)> {
        self.0.iter().flat_map(|(projection, rows)| {
            rows.iter()
                .map(move |(key, value)| (projection.as_str(), key.as_str(), value))
        })
    }
}
