//! The redb store: versions, change log, offsets, and rebuild on definition change.

use facet_bff::projection::{Row, RowChange, RowOp};
use facet_bff::store::{Missed, Opened, Store};
use serde_json::json;

fn row(value: serde_json::Value) -> Row {
    value.as_object().unwrap().clone()
}

fn upsert(key: &str, n: i64) -> RowChange {
    RowChange {
        projection: "order".into(),
        key: key.into(),
        op: RowOp::Upsert(row(json!({"n": n}))),
    }
}

#[test]
fn changes_get_consecutive_versions_and_commit_with_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let (store, opened) = Store::open(&dir.path().join("db"), "h1", 100).unwrap();
    assert_eq!(opened, Opened::Empty);
    let mut batch = store.batch().unwrap();
    batch
        .apply(vec![upsert("a", 1), upsert("b", 1)], Some(5))
        .unwrap();
    assert_eq!(
        batch.row("order", "a").unwrap(),
        Some(row(json!({"n": 1}))),
        "reads see the batch"
    );
    batch.apply(vec![upsert("a", 2)], None).unwrap();
    batch.set_offset("t", 0, 3);
    let committed = batch.commit().unwrap();
    assert_eq!(
        committed.iter().map(|c| c.version).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert_eq!(store.version("order").unwrap(), 3);
    assert_eq!(store.row("order", "a").unwrap().unwrap().version, 3);
    assert_eq!(store.offsets().unwrap()[&("t".to_string(), 0)], 3);
    let (version, rows) = store.rows("order", None, 10, |_| true).unwrap();
    assert_eq!(version, 3);
    assert_eq!(
        rows.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
        ["a", "b"]
    );
    let (_, after_a) = store.rows("order", Some("a"), 10, |_| true).unwrap();
    assert_eq!(after_a.len(), 1);
}

#[test]
fn an_uncommitted_batch_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(&dir.path().join("db"), "h1", 100).unwrap();
    let mut batch = store.batch().unwrap();
    batch.apply(vec![upsert("a", 1)], None).unwrap();
    batch.set_offset("t", 0, 1);
    drop(batch);
    assert_eq!(store.row("order", "a").unwrap(), None);
    assert!(store.offsets().unwrap().is_empty());
}

#[test]
fn change_log_is_bounded_and_says_when_it_no_longer_reaches_back() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(&dir.path().join("db"), "h1", 3).unwrap();
    for n in 0..5 {
        let mut batch = store.batch().unwrap();
        batch.apply(vec![upsert("a", n)], None).unwrap();
        batch.commit().unwrap();
    }
    match store.changes_since("order", 2).unwrap() {
        Missed::Changes(changes) => {
            assert_eq!(
                changes.iter().map(|c| c.version).collect::<Vec<_>>(),
                [3, 4, 5]
            )
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        store.changes_since("order", 1).unwrap(),
        Missed::TooOld { oldest_kept: 3 }
    );
    assert_eq!(
        store.changes_since("order", 5).unwrap(),
        Missed::Changes(vec![])
    );
}

#[test]
fn reopening_resumes_and_a_new_definition_rebuilds() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    {
        let (store, _) = Store::open(&path, "h1", 10).unwrap();
        let mut batch = store.batch().unwrap();
        batch
            .apply(
                vec![
                    upsert("a", 1),
                    RowChange {
                        projection: "order".into(),
                        key: "a".into(),
                        op: RowOp::Delete,
                    },
                ],
                None,
            )
            .unwrap();
        batch.apply(vec![upsert("b", 1)], None).unwrap();
        batch.set_offset("t", 0, 2);
        batch.commit().unwrap();
    }
    {
        let (store, opened) = Store::open(&path, "h1", 10).unwrap();
        assert_eq!(opened, Opened::Resumed);
        assert_eq!(store.row("order", "a").unwrap(), None, "deleted");
        assert!(store.row("order", "b").unwrap().is_some());
        assert_eq!(store.offsets().unwrap().len(), 1);
    }
    let (store, opened) = Store::open(&path, "h2", 10).unwrap();
    assert_eq!(opened, Opened::Rebuilt);
    assert_eq!(store.row("order", "b").unwrap(), None);
    assert!(store.offsets().unwrap().is_empty());
    assert_eq!(store.version("order").unwrap(), 0);
}
