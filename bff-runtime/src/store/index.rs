//! The index: `(projection, field, value, key)` for the fields access rules
//! compare, so a viewer's rows are found without reading every row.
//!
//! Kept batch by batch while live, but not while a replay fills an empty store:
//! there every batch added entries all over the table (one per order, scattered by
//! customer), and writing those pages was a fifth of the store writer's work. Such a
//! replay marks the index deferred in the same transaction as its first batch;
//! nothing reads a deferred index (scans read the rows instead); and once the
//! replay has caught up, [`build`] writes the whole index from the stored rows in
//! one transaction, which also clears the mark. A crash in between leaves the mark
//! with the rows, so the next start finishes the job.

use std::collections::BTreeMap;

use redb::{ReadableTable, WriteTransaction};

use super::{index_value, StoreError, INDEX, META, ROWS};
use crate::projection::Row;

/// In `META` while the index is deferred (present: incomplete).
pub(super) const DEFERRED: &str = "index_deferred";
/// Entries sorted and written at a time: sorted runs write the table's pages once
/// each, and a bounded run keeps the memory bounded whatever the store's size.
const RUN: usize = 100_000;

/// Whether the index is deferred, as `meta` sees it.
pub(super) fn is_deferred(
    meta: &impl ReadableTable<&'static str, &'static str>,
) -> Result<bool, StoreError> {
    Ok(meta.get(DEFERRED)?.is_some())
}

/// Marks the index deferred, in the transaction of the first batch that leaves it.
pub(super) fn defer(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(META)?.insert(DEFERRED, "true")?;
    Ok(())
}

/// Writes the index anew from the stored rows, for the fields `indexed` names,
/// and clears the deferred mark. Returns how many entries it wrote.
pub(super) fn build(
    txn: &WriteTransaction,
    indexed: &BTreeMap<String, Vec<String>>,
) -> Result<u64, StoreError> {
    txn.delete_table(INDEX)?;
    let rows = txn.open_table(ROWS)?;
    let mut index = txn.open_table(INDEX)?;
    let mut written = 0u64;
    let mut run: Vec<(String, String, String)> = Vec::new();
    let mut flush =
        |projection: &str, run: &mut Vec<(String, String, String)>| -> Result<(), StoreError> {
            run.sort_unstable();
            for (field, value, key) in run.drain(..) {
                index.insert(
                    (projection, field.as_str(), value.as_str(), key.as_str()),
                    (),
                )?;
                written += 1;
            }
            Ok(())
        };
    for (projection, fields) in indexed {
        for entry in rows.range((projection.as_str(), "")..)? {
            let (key, bytes) = entry?;
            let (p, key) = key.value();
            if p != projection {
                break;
            }
            let row: Row = serde_json::from_slice(bytes.value())?;
            for field in fields {
                if let Some(value) = row.get(field).and_then(index_value) {
                    run.push((field.clone(), value, key.to_string()));
                }
            }
            if run.len() >= RUN {
                flush(projection, &mut run)?;
            }
        }
        flush(projection, &mut run)?;
    }
    txn.open_table(META)?.remove(DEFERRED)?;
    Ok(written)
}
