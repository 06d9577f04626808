//! Rows kept in memory: the engine without a store, for tests and tools.

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;

use super::{Applied, Row, RowOp, Rows, Stored};

/// Rows and the reverse index of embeds, in memory.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct MemoryRows {
    rows: BTreeMap<(String, String), Stored>,
    /// (target, target key, embedder, embed, embedder key).
    links: BTreeSet<(String, String, String, String, String)>,
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
            let entry = (
                link.target.clone(),
                link.target_key.clone(),
                link.embedder.clone(),
                link.embed.clone(),
                link.key.clone(),
            );
            match link.linked {
                true => self.links.insert(entry),
                false => self.links.remove(&entry),
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
        let from = (
            projection.to_string(),
            key.to_string(),
            embedder.to_string(),
            embed.to_string(),
            String::new(),
        );
        Ok(self
            .links
            .range(from..)
            .take_while(|(t, k, e, name, _)| {
                t == projection && k == key && e == embedder && name == embed
            })
            .take(limit)
            .map(|(.., key)| key.clone())
            .collect())
    }
}
