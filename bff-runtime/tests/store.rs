//! The redb store: positions, the change log and where it starts, the index, and
//! rebuild on definition change.

use std::collections::BTreeMap;

use facet_bff::projection::{Row, RowChange, RowOp};
use facet_bff::store::{Layout, Missed, Opened, Position, Store};
use serde_json::json;

fn row(value: serde_json::Value) -> Row {
    value.as_object().unwrap().clone()
}

fn upsert(key: &str, value: serde_json::Value) -> RowChange {
    RowChange {
        projection: "order".into(),
        key: key.into(),
        op: RowOp::Upsert(row(value)),
    }
}

fn layout(hash: &str, log: u64) -> Layout {
    Layout {
        definition_hash: hash.into(),
        topics: vec!["t".into(), "u".into()],
        indexed: BTreeMap::from([("order".to_string(), vec!["customerId".to_string()])]),
        change_log_length: log,
        access: BTreeMap::new(),
    }
}

fn open(dir: &tempfile::TempDir, hash: &str, log: u64) -> (Store, Opened) {
    Store::open(&dir.path().join("db"), layout(hash, log)).unwrap()
}

/// One record per change, on partition `partition` of topic `t`.
fn commit(store: &Store, records: &[(i32, i64, RowChange)]) -> Vec<facet_bff::store::Change> {
    let mut batch = store.batch().unwrap();
    for (partition, offset, change) in records {
        batch.read_record("t", *partition, *offset);
        batch.apply(vec![change.clone()], Some(5)).unwrap();
    }
    batch.commit().unwrap()
}

fn at(offsets: &[(i32, i64)]) -> Position {
    let mut position = Position::default();
    for (partition, next) in offsets {
        position.advance("t", *partition, *next);
    }
    position
}

#[test]
fn changes_carry_their_record_and_the_position_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let (store, opened) = open(&dir, "00aa", 100);
    assert_eq!(opened, Opened::Empty);
    let mut batch = store.batch().unwrap();
    batch.read_record("t", 0, 0);
    batch
        .apply(vec![upsert("a", json!({"n": 1}))], None)
        .unwrap();
    assert_eq!(
        batch.row("order", "a").unwrap(),
        Some(row(json!({"n": 1}))),
        "reads see the batch"
    );
    batch.read_record("t", 1, 7);
    batch
        .apply(
            vec![upsert("a", json!({"n": 2})), upsert("b", json!({"n": 1}))],
            None,
        )
        .unwrap();
    // A record that changes nothing still moves the position.
    batch.read_record("u", 0, 3);
    let committed = batch.commit().unwrap();
    assert_eq!(
        committed.iter().map(|c| c.seq).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    // The definition, then the digest of the access rules the position is issued under.
    let head = format!("00aa.{}~", layout("00aa", 0).access_digest());
    assert!(committed[0].position.starts_with(&head), "{head}");
    let decoded = |text: &str| store.codec().decode(text).unwrap();
    assert_eq!(decoded(&committed[0].position), at(&[(0, 1)]));
    assert_eq!(decoded(&committed[1].position), at(&[(0, 1), (1, 8)]));
    assert_eq!(
        committed[2].position, committed[1].position,
        "one record, one position"
    );
    assert_eq!(committed[1].previous, Some(row(json!({"n": 1}))));
    assert_eq!(
        (committed[1].source.partition, committed[1].source.offset),
        (1, 7)
    );
    assert_eq!(store.row("order", "a").unwrap(), Some(row(json!({"n": 2}))));
    let mut expected = at(&[(0, 1), (1, 8)]);
    expected.advance("u", 0, 4);
    assert_eq!(store.position(), expected);
    let view = store.view().unwrap();
    assert_eq!(view.seq().unwrap(), 3);
    let keys: Vec<_> = view
        .rows("order", None, None, 10, |_, _| true)
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(keys, ["a", "b"]);
    assert_eq!(
        view.rows("order", Some("a"), None, 10, |_, _| true)
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn an_uncommitted_batch_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(&dir, "00aa", 100);
    let mut batch = store.batch().unwrap();
    batch.read_record("t", 0, 0);
    batch
        .apply(vec![upsert("a", json!({"n": 1}))], None)
        .unwrap();
    drop(batch);
    assert_eq!(store.row("order", "a").unwrap(), None);
    assert!(store.offsets().unwrap().is_empty());
}

#[test]
fn missed_changes_are_those_of_records_after_the_position_whatever_the_order() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(&dir, "00aa", 100);
    // Partition 1 read ahead of partition 0 in this replica's order.
    commit(
        &store,
        &[
            (1, 0, upsert("x", json!({"n": 1}))),
            (1, 1, upsert("y", json!({"n": 1}))),
        ],
    );
    commit(
        &store,
        &[
            (0, 0, upsert("a", json!({"n": 1}))),
            (0, 1, upsert("b", json!({"n": 1}))),
        ],
    );
    // A client that came from a replica which read partition 0 first.
    let since = at(&[(0, 2), (1, 1)]);
    let view = store.view().unwrap();
    let Missed::Changes(missed) = view.missed(&since).unwrap() else {
        panic!("the log reaches back")
    };
    assert_eq!(
        missed.iter().map(|c| c.key.as_str()).collect::<Vec<_>>(),
        ["y"]
    );
    assert_eq!(
        view.missed(&store.position()).unwrap(),
        Missed::Changes(vec![])
    );
    assert_eq!(
        view.missed(&at(&[(0, 3)])).unwrap(),
        Missed::Ahead,
        "a position this replica has not reached"
    );
}

#[test]
fn the_log_is_trimmed_by_batches_and_says_when_it_no_longer_reaches_back() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(&dir, "00aa", 3);
    for offset in 0..5 {
        commit(&store, &[(0, offset, upsert("a", json!({"n": offset})))]);
    }
    let view = store.view().unwrap();
    let Missed::Changes(missed) = view.missed(&at(&[(0, 2)])).unwrap() else {
        panic!("the last 3 changes are kept")
    };
    assert_eq!(
        missed.iter().map(|c| c.source.offset).collect::<Vec<_>>(),
        [2, 3, 4]
    );
    assert_eq!(view.missed(&at(&[(0, 1)])).unwrap(), Missed::TooOld);
    assert_eq!(view.missed(&Position::default()).unwrap(), Missed::TooOld);
}

#[test]
fn the_index_follows_rows_and_finds_them_by_value() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(&dir, "00aa", 100);
    commit(
        &store,
        &[
            (0, 0, upsert("o-1", json!({"customerId": "alice"}))),
            (0, 1, upsert("o-2", json!({"customerId": "bob"}))),
            (0, 2, upsert("o-3", json!({"customerId": "alice"}))),
        ],
    );
    commit(
        &store,
        &[
            (0, 3, upsert("o-3", json!({"customerId": "bob"}))),
            (
                0,
                4,
                RowChange {
                    projection: "order".into(),
                    key: "o-2".into(),
                    op: RowOp::Delete,
                },
            ),
        ],
    );
    let by = |who: &str| -> Vec<String> {
        let who = json!(who);
        let mut read = 0;
        let rows = store
            .view()
            .unwrap()
            .rows("order", None, Some(("customerId", &who)), 10, |_, _| {
                read += 1;
                true
            })
            .unwrap();
        assert_eq!(read, rows.len(), "only the indexed rows are read");
        rows.into_iter().map(|(k, _)| k).collect()
    };
    assert_eq!(by("alice"), ["o-1"]);
    assert_eq!(by("bob"), ["o-3"]);
    assert!(by("carol").is_empty());
}

#[test]
fn a_coalescing_batch_keeps_one_change_per_row_from_before_the_batch() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(&dir, "00aa", 100);
    commit(
        &store,
        &[(0, 0, upsert("o-1", json!({"customerId": "alice"})))],
    );
    let mut batch = store.batch().unwrap().coalescing();
    for (offset, change) in [
        (1, upsert("o-1", json!({"customerId": "bob"}))),
        (2, upsert("o-2", json!({"customerId": "dave"}))),
        (3, upsert("o-1", json!({"customerId": "carol"}))),
        (4, upsert("o-2", json!({"customerId": "erin"}))),
    ] {
        batch.read_record("t", 0, offset);
        batch.apply(vec![change], Some(offset)).unwrap();
    }
    assert_eq!(
        batch.row("order", "o-1").unwrap(),
        Some(row(json!({"customerId": "carol"}))),
        "reads see the batch's last write"
    );
    assert_eq!(
        batch.change_count(),
        4,
        "a coalesced change leaves a hole until sealed"
    );
    let committed = batch.commit().unwrap();
    let summary: Vec<_> = committed
        .iter()
        .map(|c| {
            (
                c.key.as_str(),
                c.previous.clone(),
                c.op.row().cloned(),
                c.source.offset,
                store.codec().decode(&c.position).unwrap(),
                c.event_time_ms,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (
                "o-1",
                Some(row(json!({"customerId": "alice"}))),
                Some(row(json!({"customerId": "carol"}))),
                3,
                at(&[(0, 4)]),
                Some(3),
            ),
            (
                "o-2",
                None,
                Some(row(json!({"customerId": "erin"}))),
                4,
                at(&[(0, 5)]),
                Some(4),
            ),
        ],
        "one change per row, from the row before the batch, at its latest record, in commit order"
    );
    assert!(committed[0].seq < committed[1].seq);
    let by = |who: &str| -> Vec<String> {
        let who = json!(who);
        let view = store.view().unwrap();
        let rows = view.rows("order", None, Some(("customerId", &who)), 10, |_, _| true);
        rows.unwrap().into_iter().map(|(k, _)| k).collect()
    };
    for gone in ["alice", "bob", "dave"] {
        assert!(by(gone).is_empty(), "the index no longer finds {gone}");
    }
    assert_eq!(
        (by("carol"), by("erin")),
        (vec!["o-1".to_string()], vec!["o-2".to_string()])
    );
}

#[test]
fn reopening_resumes_and_a_new_definition_rebuilds() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (store, _) = open(&dir, "00aa", 10);
        commit(
            &store,
            &[
                (0, 0, upsert("a", json!({"n": 1}))),
                (0, 1, upsert("b", json!({"n": 1}))),
            ],
        );
    }
    {
        let (store, opened) = open(&dir, "00aa", 10);
        assert_eq!(opened, Opened::Resumed);
        assert!(store.row("order", "b").unwrap().is_some());
        assert_eq!(store.position(), at(&[(0, 2)]));
        assert_eq!(
            commit(&store, &[(0, 2, upsert("c", json!({})))])[0].seq,
            3,
            "commit numbers go on"
        );
    }
    let (store, opened) = open(&dir, "00bb", 10);
    assert_eq!(opened, Opened::Rebuilt);
    assert_eq!(store.row("order", "b").unwrap(), None);
    assert!(store.offsets().unwrap().is_empty());
    assert_eq!(store.view().unwrap().seq().unwrap(), 0);
}

#[test]
fn a_batch_reads_through_the_one_before_while_it_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(&dir, "00aa", 100);
    let mut first = store.batch().unwrap();
    first.read_record("t", 0, 0);
    first
        .apply(vec![upsert("a", json!({"customerId": "alice"}))], None)
        .unwrap();
    let first = std::sync::Arc::new(first.seal());
    // The second batch starts before the first is written, and builds on it.
    let mut second = store.batch_after(Some(first.clone())).unwrap();
    assert_eq!(
        second.row("order", "a").unwrap(),
        Some(row(json!({"customerId": "alice"})))
    );
    second.read_record("t", 0, 1);
    second
        .apply(vec![upsert("a", json!({"customerId": "bob"}))], None)
        .unwrap();
    let second = second.seal();
    assert_eq!(
        second.changes().next().unwrap().seq,
        2,
        "sequence numbers follow on"
    );
    assert_eq!(
        second.changes().next().unwrap().previous,
        Some(row(json!({"customerId": "alice"})))
    );
    store.write(&first).unwrap();
    store.write(&second).unwrap();
    assert_eq!(store.position(), at(&[(0, 2)]));
    let view = store.view().unwrap();
    assert_eq!(
        view.row("order", "a").unwrap(),
        Some(row(json!({"customerId": "bob"})))
    );
    // The index moved with the row: alice's entry went with the second batch.
    let by = |customer: &str| {
        view.rows(
            "order",
            None,
            Some(("customerId", &json!(customer))),
            10,
            |_, _| true,
        )
        .unwrap()
        .len()
    };
    assert_eq!((by("alice"), by("bob")), (0, 1));
    match view.missed(&at(&[(0, 0)])).unwrap() {
        Missed::Changes(changes) => assert_eq!(changes.len(), 2),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_batch_longer_than_the_log_leaves_the_log_starting_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(&dir, "00aa", 2);
    commit(&store, &[(0, 0, upsert("a", json!({"n": 1})))]);
    commit(
        &store,
        &[
            (0, 1, upsert("a", json!({"n": 2}))),
            (0, 2, upsert("b", json!({"n": 1}))),
            (0, 3, upsert("c", json!({"n": 1}))),
        ],
    );
    let view = store.view().unwrap();
    assert_eq!(view.missed(&at(&[(0, 1)])).unwrap(), Missed::TooOld);
    assert_eq!(
        view.missed(&at(&[(0, 4)])).unwrap(),
        Missed::Changes(vec![])
    );
    // The next batch is logged as usual, after it.
    commit(&store, &[(0, 4, upsert("a", json!({"n": 3})))]);
    match store.view().unwrap().missed(&at(&[(0, 4)])).unwrap() {
        Missed::Changes(changes) => assert_eq!(changes.len(), 1),
        other => panic!("{other:?}"),
    }
}

/// Keys of the rows whose `customerId` is `who`, and how many rows were read.
fn by_customer(store: &Store, who: &str) -> (Vec<String>, usize) {
    let (who, mut read) = (json!(who), 0);
    let rows = store
        .view()
        .unwrap()
        .rows("order", None, Some(("customerId", &who)), 10, |_, row| {
            read += 1;
            row.get("customerId") == Some(&who) // as callers do: the lookup only narrows
        })
        .unwrap();
    (rows.into_iter().map(|(k, _)| k).collect(), read)
}

#[test]
fn a_replay_that_defers_the_index_writes_it_at_the_end_even_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(&dir, "00aa", 100);
    let mut batch = store.batch().unwrap().coalescing().deferring_index();
    for (offset, (key, who)) in [("o-1", "alice"), ("o-2", "bob"), ("o-3", "alice")]
        .into_iter()
        .enumerate()
    {
        batch.read_record("t", 0, offset as i64);
        let change = upsert(key, json!({ "customerId": who }));
        batch.apply(vec![change], None).unwrap();
    }
    store.write(&batch.seal()).unwrap();
    assert!(store.index_deferred());
    // Nothing reads a deferred index: lookups read every row instead.
    assert_eq!(
        by_customer(&store, "alice"),
        (vec!["o-1".into(), "o-3".into()], 3)
    );

    // A crash before the replay's end: the mark is kept with the rows.
    drop(store);
    let (store, opened) = open(&dir, "00aa", 100);
    assert_eq!(opened, Opened::Resumed);
    assert!(store.index_deferred());
    let mut batch = store.batch().unwrap().coalescing().deferring_index();
    batch.read_record("t", 0, 3);
    batch
        .apply(vec![upsert("o-1", json!({"customerId": "bob"}))], None)
        .unwrap();
    store.write(&batch.seal()).unwrap();

    store.complete_index().unwrap();
    assert!(!store.index_deferred());
    assert_eq!(by_customer(&store, "alice"), (vec!["o-3".into()], 1));
    assert_eq!(
        by_customer(&store, "bob"),
        (vec!["o-1".into(), "o-2".into()], 2)
    );
    // Live batches keep it from then on.
    commit(
        &store,
        &[(0, 4, upsert("o-4", json!({"customerId": "alice"})))],
    );
    assert_eq!(
        by_customer(&store, "alice"),
        (vec!["o-3".into(), "o-4".into()], 2)
    );
    drop(store);
    assert!(!open(&dir, "00aa", 100).0.index_deferred());
}

#[test]
fn an_unlogged_batch_leaves_the_log_starting_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(&dir, "00aa", 100);
    commit(&store, &[(0, 0, upsert("a", json!({"n": 1})))]);
    let mut batch = store.batch().unwrap();
    batch.read_record("t", 0, 1);
    batch
        .apply(vec![upsert("a", json!({"n": 2}))], None)
        .unwrap();
    batch.unlogged();
    store.write(&batch.seal()).unwrap();
    let view = store.view().unwrap();
    assert_eq!(view.missed(&at(&[(0, 1)])).unwrap(), Missed::TooOld);
    assert_eq!(
        view.missed(&at(&[(0, 2)])).unwrap(),
        Missed::Changes(vec![])
    );
    assert_eq!(store.row("order", "a").unwrap(), Some(row(json!({"n": 2}))));
}

#[test]
fn a_new_access_rule_rebuilds_the_index_from_the_stored_rows() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(&dir, "00aa", 100);
    commit(
        &store,
        &[
            (
                0,
                0,
                upsert("a", json!({"customerId": "alice", "region": "eu"})),
            ),
            (
                0,
                1,
                upsert("b", json!({"customerId": "bob", "region": "us"})),
            ),
        ],
    );
    drop(store);
    let mut regional = layout("00aa", 100);
    regional.indexed = BTreeMap::from([("order".to_string(), vec!["region".to_string()])]);
    let (store, opened) = Store::open(&dir.path().join("db"), regional).unwrap();
    assert_eq!(opened, Opened::Resumed, "the rows are kept");
    let view = store.view().unwrap();
    let keys = |field: &str, value: &str| -> Vec<String> {
        view.rows("order", None, Some((field, &json!(value))), 10, |_, _| true)
            .unwrap()
            .into_iter()
            .map(|(key, _)| key)
            .collect()
    };
    assert_eq!(keys("region", "us"), ["b"]);
    assert_eq!(keys("region", "eu"), ["a"]);
}

/// A store with rows, an index entry, a change log and offsets, and its image.
fn store_and_image(dir: &tempfile::TempDir) -> (Store, Vec<u8>) {
    let (store, _) = open(dir, "00aa", 100);
    commit(
        &store,
        &[
            (0, 0, upsert("a", json!({"customerId": "alice"}))),
            (1, 4, upsert("b", json!({"customerId": "bob"}))),
        ],
    );
    let mut image = Vec::new();
    let summary = store.export(&mut image).unwrap();
    assert!(summary.entries > 4, "{summary:?}");
    (store, image)
}

fn restore(image: &[u8], hash: &str) -> Result<(Store, tempfile::TempDir), String> {
    use facet_bff::store::image;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    image::restore(&path, &layout(hash, 100), image)
        .map_err(|e| e.to_string())
        .map(|_| ())?;
    let (store, opened) = Store::open(&path, layout(hash, 100)).unwrap();
    assert_eq!(opened, Opened::Resumed);
    Ok((store, dir))
}

#[test]
fn an_image_restores_the_same_rows_log_and_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let (original, image) = store_and_image(&dir);
    let (copy, _dir) = restore(&image, "00aa").unwrap();
    assert_eq!(copy.position(), original.position());
    let (a, b) = (original.view().unwrap(), copy.view().unwrap());
    let all = |view: &facet_bff::store::View<'_>| {
        view.rows("order", None, None, 100, |_, _| true).unwrap()
    };
    assert_eq!(all(&a), all(&b));
    assert_eq!(
        a.missed(&Position::default()).unwrap(),
        b.missed(&Position::default()).unwrap()
    );
    assert_eq!(
        b.rows(
            "order",
            None,
            Some(("customerId", &json!("bob"))),
            10,
            |_, _| true
        )
        .unwrap()
        .len(),
        1,
        "the index came along"
    );
    // The copy goes on where the original stopped.
    commit(
        &copy,
        &[(0, 1, upsert("c", json!({"customerId": "carol"})))],
    );
    assert_eq!(copy.position(), at(&[(0, 2), (1, 5)]));
}

#[test]
fn a_truncated_corrupted_or_foreign_image_is_refused_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (_, image) = store_and_image(&dir);
    let cut = &image[..image.len() * 2 / 3];
    let cut = &cut[..=cut.iter().rposition(|b| *b == b'\n').unwrap()];
    let error = restore(cut, "00aa").err().unwrap();
    assert!(error.contains("truncated"), "{error}");
    // Cut in the middle of a line, as when the peer sending it dies.
    let mid_line = &image[..image.len() / 2];
    assert_ne!(mid_line.last(), Some(&b'\n'));
    let error = restore(mid_line, "00aa").err().unwrap();
    assert!(error.contains("truncated"), "{error}");

    let mut corrupted = image.clone();
    let at = corrupted.windows(5).position(|w| w == b"alice").unwrap();
    corrupted[at] = b'A';
    let error = restore(&corrupted, "00aa").err().unwrap();
    assert!(error.contains("corrupted"), "{error}");

    let error = restore(&image, "00bb").err().unwrap();
    assert!(error.contains("definition"), "{error}");

    // Nothing is left where the store would be.
    let target = tempfile::tempdir().unwrap();
    let path = target.path().join("db");
    assert!(facet_bff::store::image::restore(&path, &layout("00aa", 100), cut).is_err());
    assert!(!path.exists());
    assert!(!path.with_extension("restoring").exists());
}

/// Regression (issue 24): a list read with a filter no index serves scanned and
/// decoded the whole projection. A scan stops after SCAN_MAX_ROWS rows read and
/// says where to go on from, even when it kept none.
#[test]
fn a_scan_stops_within_its_budget_and_says_where_to_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(&dir, "00aa", 10);
    let total = facet_bff::store::SCAN_MAX_ROWS + 10;
    let mut batch = store.batch().unwrap();
    batch.read_record("t", 0, 0);
    let changes = (0..total)
        .map(|i| upsert(&format!("o-{i:06}"), json!({"n": i})))
        .collect();
    batch.apply(changes, None).unwrap();
    batch.commit().unwrap();
    let view = store.view().unwrap();
    let scan = view.scan("order", None, None, 10, |_, _| false).unwrap();
    assert!(scan.rows.is_empty());
    assert!(scan.budget_spent);
    let resume = scan.resume_after.expect("where to go on from");
    assert_eq!(
        resume,
        format!("o-{:06}", facet_bff::store::SCAN_MAX_ROWS - 1)
    );
    let rest = view
        .scan("order", Some(&resume), None, 10, |_, _| false)
        .unwrap();
    assert_eq!(
        (rest.budget_spent, rest.resume_after),
        (false, None),
        "the last 10 rows, then the end"
    );
    let page = view.scan("order", None, None, 3, |_, _| true).unwrap();
    assert_eq!(page.rows.len(), 3);
    assert!(!page.budget_spent);
    assert_eq!(page.resume_after.as_deref(), Some("o-000002"));
}

/// A replay commits most batches without a sync: readers, the batch after and a
/// peer's image see such a batch at once, and a later sync keeps it.
#[test]
fn an_unsynced_batch_is_seen_at_once_and_kept_by_the_next_sync() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(&dir, "00aa", 100);
    let mut batch = store.batch().unwrap();
    batch.read_record("t", 0, 0);
    batch
        .apply(vec![upsert("a", json!({"customerId": "alice"}))], None)
        .unwrap();
    store
        .write_as(&batch.seal(), redb::Durability::None)
        .unwrap();
    assert!(store.row("order", "a").unwrap().is_some());
    assert_eq!(store.position(), at(&[(0, 1)]));
    let mut image = Vec::new();
    store.export(&mut image).unwrap();
    let (copy, _copy_dir) = restore(&image, "00aa").unwrap();
    assert!(
        copy.row("order", "a").unwrap().is_some(),
        "the image has it"
    );
    commit(&store, &[(0, 1, upsert("b", json!({"customerId": "bob"})))]);
    store.sync().unwrap();
    drop(store);
    let (store, opened) = open(&dir, "00aa", 100);
    assert_eq!(opened, Opened::Resumed);
    assert!(store.row("order", "a").unwrap().is_some());
    assert_eq!(store.position(), at(&[(0, 2)]));
}
