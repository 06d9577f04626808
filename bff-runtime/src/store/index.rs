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

use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, Visitor};

use super::{index_value, StoreError, INDEX, META, ROWS};

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
            let values = fields_of(bytes.value(), fields)?;
            for (field, value) in fields.iter().zip(values) {
                if let Some(value) = value.as_ref().and_then(index_value) {
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

/// The values of `fields` in a stored row, without decoding the rest of it
/// (decoding whole rows was half of writing the index).
fn fields_of(
    row: &[u8],
    fields: &[String],
) -> Result<Vec<Option<serde_json::Value>>, serde_json::Error> {
    Picked(fields).deserialize(&mut serde_json::Deserializer::from_slice(row))
}

/// Picks the values of some fields out of a JSON object.
struct Picked<'f>(&'f [String]);

impl<'de> DeserializeSeed<'de> for Picked<'_> {
    type Value = Vec<Option<serde_json::Value>>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Picked<'_> {
    type Value = Vec<Option<serde_json::Value>>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a row (a JSON object)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = vec![None; self.0.len()];
        while let Some(wanted) = map.next_key_seed(FieldNumber(self.0))? {
            match wanted {
                Some(i) => found[i] = Some(map.next_value()?),
                None => drop(map.next_value::<IgnoredAny>()?),
            }
        }
        Ok(found)
    }
}

/// Which of the wanted fields a key is, compared without copying it.
struct FieldNumber<'f>(&'f [String]);

impl<'de> DeserializeSeed<'de> for FieldNumber<'_> {
    type Value = Option<usize>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for FieldNumber<'_> {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<Option<usize>, E> {
        Ok(self.0.iter().position(|field| field == key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picking_fields_gives_what_decoding_the_row_gives() {
        let row = br#"{"a": 1, "b\u0041": {"x": [1, "y"]}, "c": "t\"x", "d": null, "e": 2.5}"#;
        let fields = ["c", "bA", "missing", "d", "e"].map(String::from);
        let decoded: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(row).unwrap();
        let expected: Vec<_> = fields.iter().map(|f| decoded.get(f).cloned()).collect();
        assert_eq!(fields_of(row, &fields).unwrap(), expected);
        assert!(fields_of(b"[1]", &fields).is_err());
    }
}
