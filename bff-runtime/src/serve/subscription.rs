//! A live subscription to a row or a filtered set of rows, shared by every
//! streaming transport.
//!
//! The order of operations is what prevents gaps and duplicates: the caller
//! subscribes to the feed *before* [`Subscription::start`] reads the snapshot at
//! version V, and afterwards forwards only changes with a version above V.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

use super::access::Viewer;
use crate::projection::{Row, RowOp};
use crate::spec::CompiledProjection;
use crate::store::{Change, Missed, Store, StoreError};

/// Most rows sent in one snapshot.
pub const SNAPSHOT_LIMIT: usize = 10_000;

/// What a client asks to watch.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Selection {
    pub projection: String,
    /// One row by key.
    #[serde(default)]
    pub key: Option<String>,
    /// Rows whose top-level fields equal these values.
    #[serde(default, rename = "where")]
    pub filter: BTreeMap<String, serde_json::Value>,
    /// Send a changed row the client already has as a JSON merge patch (RFC 7396).
    #[serde(default)]
    pub delta: bool,
}

/// One row as sent to a client.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RowView {
    pub key: String,
    pub version: u64,
    pub row: Row,
}

/// What a subscription sends, in order.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Update {
    /// Every visible row at `version`.
    Snapshot { version: u64, rows: Vec<RowView> },
    /// A row changed. `op` is `upsert`, `delete`, or `remove` (the row still exists
    /// but this client may no longer see it, or it left the filter).
    Change {
        version: u64,
        key: String,
        op: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        row: Option<Row>,
        /// With `delta`, op `patch`: a JSON merge patch from the row the client has.
        #[serde(skip_serializing_if = "Option::is_none")]
        patch: Option<serde_json::Value>,
        /// When the event behind it was produced, for the delivery latency metric.
        #[serde(skip)]
        event_time_ms: Option<i64>,
    },
    /// The change log no longer reaches back to the client's version; a snapshot follows.
    Reset { reason: String },
}

pub struct Subscription {
    pub selection: Selection,
    viewer: Viewer,
    /// Keys this client currently sees, so a row that stops matching becomes a removal.
    visible: HashSet<String>,
    /// The last version accounted for.
    pub cursor: u64,
    /// With `delta`: the rows as the client has them, to patch against.
    sent: std::collections::HashMap<String, Row>,
}

impl Update {
    /// Seconds from the event's production to now, for changes that know it.
    pub fn delivery_latency(&self) -> Option<f64> {
        let Update::Change {
            event_time_ms: Some(produced),
            ..
        } = self
        else {
            return None;
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?
            .as_millis() as i64;
        Some((now - produced).max(0) as f64 / 1000.0)
    }
}

impl Subscription {
    pub fn new(selection: Selection, viewer: Viewer) -> Self {
        Subscription {
            selection,
            viewer,
            visible: HashSet::new(),
            cursor: 0,
            sent: std::collections::HashMap::new(),
        }
    }

    /// A refreshed token: what the client may see is judged by its new claims from
    /// now on.
    pub fn set_viewer(&mut self, viewer: Viewer) {
        self.viewer = viewer;
    }

    fn selects(&self, projection: &CompiledProjection, key: &str, row: &Row) -> bool {
        if self.selection.key.as_deref().is_some_and(|k| k != key) {
            return false;
        }
        self.selection
            .filter
            .iter()
            .all(|(field, value)| row.get(field) == Some(value))
            && self.viewer.can_see(projection, row)
    }

    /// The first updates: the missed changes after `since` when the log still has
    /// them, otherwise (or without `since`) a snapshot.
    pub fn start(
        &mut self,
        projection: &CompiledProjection,
        store: &Store,
        since: Option<u64>,
    ) -> Result<Vec<Update>, StoreError> {
        if let Some(since) = since {
            match store.changes_since(&projection.name, since)? {
                Missed::Changes(changes) => {
                    self.cursor = since;
                    self.visible = self.visible_before(projection, store, &changes)?;
                    let updates = changes
                        .iter()
                        .filter_map(|c| self.on_change(projection, c))
                        .collect();
                    return Ok(updates);
                }
                Missed::TooOld { oldest_kept } => {
                    let reason = format!(
                        "the change log starts at version {oldest_kept}, after {since}: here is a fresh snapshot"
                    );
                    let mut updates = vec![Update::Reset { reason }];
                    updates.push(self.snapshot(projection, store)?);
                    return Ok(updates);
                }
            }
        }
        Ok(vec![self.snapshot(projection, store)?])
    }

    /// The rows the client saw before the missed `changes`: the ones it sees now,
    /// except that a row a missed change touched is judged as it was before the first
    /// of them (the change log keeps that row). So a removal goes only to a client
    /// that saw the row: telling anyone else would leak that it exists.
    fn visible_before(
        &self,
        projection: &CompiledProjection,
        store: &Store,
        changes: &[Change],
    ) -> Result<HashSet<String>, StoreError> {
        let mut visible = self.current_keys(projection, store)?;
        let mut touched = HashSet::new();
        for change in changes {
            if !touched.insert(change.key.as_str()) {
                continue;
            }
            let saw = change
                .previous
                .as_ref()
                .is_some_and(|row| self.selects(projection, &change.key, row));
            if saw {
                visible.insert(change.key.clone());
            } else {
                visible.remove(&change.key);
            }
        }
        Ok(visible)
    }

    fn current_keys(
        &self,
        projection: &CompiledProjection,
        store: &Store,
    ) -> Result<HashSet<String>, StoreError> {
        Ok(self
            .read_rows(projection, store)?
            .1
            .into_iter()
            .map(|r| r.key)
            .collect())
    }

    fn read_rows(
        &self,
        projection: &CompiledProjection,
        store: &Store,
    ) -> Result<(u64, Vec<RowView>), StoreError> {
        let (version, rows) = match &self.selection.key {
            Some(key) => {
                let (version, row) = store.row_at_version(&projection.name, key)?;
                (version, row.map(|r| (key.clone(), r)).into_iter().collect())
            }
            None => store.rows(&projection.name, None, SNAPSHOT_LIMIT, |_| true)?,
        };
        let rows = rows
            .into_iter()
            .filter(|(key, stored)| self.selects(projection, key, &stored.row))
            .map(|(key, stored)| RowView {
                key,
                version: stored.version,
                row: stored.row,
            })
            .collect();
        Ok((version, rows))
    }

    /// A full snapshot, which also resets what the client is known to see.
    pub fn snapshot(
        &mut self,
        projection: &CompiledProjection,
        store: &Store,
    ) -> Result<Update, StoreError> {
        let (version, rows) = self.read_rows(projection, store)?;
        self.visible = rows.iter().map(|r| r.key.clone()).collect();
        if self.selection.delta {
            self.sent = rows
                .iter()
                .map(|r| (r.key.clone(), r.row.clone()))
                .collect();
        }
        self.cursor = version;
        Ok(Update::Snapshot { version, rows })
    }

    /// The update (if any) a committed change means for this client.
    pub fn on_change(
        &mut self,
        projection: &CompiledProjection,
        change: &Change,
    ) -> Option<Update> {
        if change.projection != self.selection.projection
            || change.projection != projection.name
            || change.version <= self.cursor
        {
            return None;
        }
        self.cursor = change.version;
        let was_visible = self.visible.contains(&change.key);
        let update = |op, row, patch| Update::Change {
            version: change.version,
            key: change.key.clone(),
            op,
            row,
            patch,
            event_time_ms: change.event_time_ms,
        };
        match &change.op {
            RowOp::Upsert(row) if self.selects(projection, &change.key, row) => {
                self.visible.insert(change.key.clone());
                if !self.selection.delta {
                    return Some(update("upsert", Some(row.clone()), None));
                }
                let previous = self.sent.insert(change.key.clone(), row.clone());
                Some(match previous {
                    Some(previous) => update("patch", None, Some(merge_patch(&previous, row))),
                    None => update("upsert", Some(row.clone()), None),
                })
            }
            RowOp::Upsert(_) if was_visible => {
                self.visible.remove(&change.key);
                self.sent.remove(&change.key);
                Some(update("remove", None, None))
            }
            RowOp::Delete if was_visible => {
                self.visible.remove(&change.key);
                self.sent.remove(&change.key);
                Some(update("delete", None, None))
            }
            _ => None,
        }
    }

    /// After falling behind the in-process feed: the missed changes from the store's
    /// change log, only the latest per row (a client that is behind needs where each
    /// row is now, not how it got there), or a reset and a snapshot when the log no
    /// longer has them.
    pub fn catch_up(
        &mut self,
        projection: &CompiledProjection,
        store: &Store,
    ) -> Result<Vec<Update>, StoreError> {
        match store.changes_since(&projection.name, self.cursor)? {
            Missed::Changes(changes) => {
                // Coalesced before `on_change`, so a delta is computed from the row
                // the client has, not from a skipped intermediate one.
                let mut newer = HashSet::new();
                let mut latest: Vec<&Change> = changes
                    .iter()
                    .rev()
                    .filter(|c| newer.insert(c.key.as_str()))
                    .collect();
                latest.reverse();
                Ok(latest
                    .into_iter()
                    .filter_map(|c| self.on_change(projection, c))
                    .collect())
            }
            Missed::TooOld { .. } => Ok(vec![
                Update::Reset {
                    reason: "fell behind the change log: here is a fresh snapshot".into(),
                },
                self.snapshot(projection, store)?,
            ]),
        }
    }
}

/// The JSON merge patch (RFC 7396) that turns `from` into `to`.
pub fn merge_patch(from: &Row, to: &Row) -> serde_json::Value {
    let mut patch = serde_json::Map::new();
    for (key, new) in to {
        match (from.get(key), new) {
            (Some(old), _) if old == new => {}
            (Some(serde_json::Value::Object(old)), serde_json::Value::Object(new)) => {
                patch.insert(key.clone(), merge_patch(old, new));
            }
            _ => {
                patch.insert(key.clone(), new.clone());
            }
        }
    }
    for key in from.keys().filter(|k| !to.contains_key(*k)) {
        patch.insert(key.clone(), serde_json::Value::Null);
    }
    serde_json::Value::Object(patch)
}
