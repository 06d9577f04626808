//! Rows kept in memory: the engine without a store, for tests and tools.

use std::collections::BTreeMap;
use std::convert::Infallible;

use super::{links_of, Applied, LinkKey, Row, RowOp, Rows, Stored};

/// Rows and the reverse index of embeds, in memory.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct MemoryRows {
    rows: BTreeMap<(String, String), Stored>,
    /// The reverse index of embeds (only entries that are added).
    links: BTreeMap<LinkKey, bool>,
}

impl MemoryRows {
    /// Writes what one event changed.
    pub fn write(&mut self, applied: &Applied) {
        for held in &applied.held {
            let id = (held.projection.clone(), held.key.clone());
            match &held.row {
                Some(row) => {
                    self.rows.insert(id, Stored::Held(row.clone()));
                }
                None => {
                    if matches!(self.rows.get(&id), Some(Stored::Held(_))) {
                        self.rows.remove(&id);
                    }
                }
            }
        }
        for change in &applied.changes {
            let id = (change.projection.clone(), change.key.clone());
            match &change.op {
                RowOp::Upsert(row) => {
                    self.rows.insert(id, Stored::Served(row.clone()));
                }
                RowOp::Delete => {
                    self.rows.remove(&id);
                }
            }
        }
        for link in &applied.links {
            match link.clone().into_entry() {
                (entry, true) => self.links.insert(entry, true),
                (entry, false) => self.links.remove(&entry),
            };
        }
    }

    /// The served rows, by (projection, key).
    pub fn served(&self) -> BTreeMap<(String, String), Row> {
        self.rows
            .iter()
            .filter_map(|(id, stored)| stored.served().map(|row| (id.clone(), row.clone())))
            .collect()
    }
}

impl Rows for MemoryRows {
    type Error = Infallible;

    fn stored(&self, projection: &str, key: &str) -> Result<Option<Stored>, Infallible> {
        Ok(self
            .rows
            .get(&(projection.to_string(), key.to_string()))
            .cloned())
    }

    fn embedders(
        &self,
        projection: &str,
        key: &str,
        embedder: &str,
        embed: &str,
        limit: usize,
    ) -> Result<Vec<String>, Infallible> {
        Ok(links_of(&self.links, projection, key, embedder, embed)
            .take(limit)
            .map(|(key, _)| key.to_string())
            .collect())
    }
}
