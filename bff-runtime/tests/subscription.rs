//! A subscription that fell behind the in-process feed catches up from the store's
//! change log: one update per row (latest wins), deltas from what the client has.

use std::sync::Arc;

use facet_bff::projection::{Row, RowChange, RowOp};
use facet_bff::serve::access::Viewer;
use facet_bff::serve::subscription::{Selection, Subscription, Update};
use facet_bff::spec::{compile, parse_manifests, CompiledExperience};
use facet_bff::store::Store;
use serde_json::json;

fn storefront() -> Arc<CompiledExperience> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../config/samples/storefront.yaml"
    );
    let manifest = parse_manifests(&std::fs::read_to_string(path).unwrap())
        .remove(0)
        .unwrap();
    Arc::new(compile(&manifest.spec).unwrap())
}

fn empty_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(&dir.path().join("db"), "h1", 100).unwrap();
    (dir, store)
}

fn upsert(key: &str, row: serde_json::Value) -> RowChange {
    RowChange {
        projection: "order".into(),
        key: key.into(),
        op: RowOp::Upsert(row.as_object().unwrap().clone()),
    }
}

fn commit(store: &Store, changes: Vec<RowChange>) {
    let mut batch = store.batch().unwrap();
    batch.apply(changes, None).unwrap();
    batch.commit().unwrap();
}

fn changed(update: &Update) -> (String, &'static str, Option<Row>, Option<serde_json::Value>) {
    match update {
        Update::Change {
            key,
            op,
            row,
            patch,
            ..
        } => (key.clone(), *op, row.clone(), patch.clone()),
        other => panic!("expected a change, got {other:?}"),
    }
}

#[test]
fn catching_up_sends_each_row_once_with_deltas_from_what_the_client_has() {
    let experience = storefront();
    let order = experience.projection("order").unwrap();
    let (_dir, store) = empty_store();
    commit(
        &store,
        vec![upsert("o-1", json!({"status": "placed", "total": 5}))],
    );

    let selection = |delta| Selection {
        projection: "order".into(),
        key: None,
        filter: Default::default(),
        delta,
    };
    let mut whole = Subscription::new(selection(false), Viewer::Console);
    let mut deltas = Subscription::new(selection(true), Viewer::Console);
    whole.start(order, &store, None).unwrap();
    deltas.start(order, &store, None).unwrap();

    // Both fall behind while o-1 changes three times and o-2 once, in between.
    commit(
        &store,
        vec![upsert(
            "o-1",
            json!({"status": "shipped", "total": 5, "carrier": "DHL"}),
        )],
    );
    commit(
        &store,
        vec![upsert("o-2", json!({"status": "placed", "total": 7}))],
    );
    commit(
        &store,
        vec![upsert(
            "o-1",
            json!({"status": "shipped", "total": 5, "carrier": "DHL", "paid": true}),
        )],
    );

    let updates = whole.catch_up(order, &store).unwrap();
    let keys: Vec<_> = updates.iter().map(|u| changed(u).0).collect();
    assert_eq!(keys, ["o-2", "o-1"], "one update per row, in version order");
    assert_eq!(
        changed(&updates[1]).2.unwrap()["paid"],
        true,
        "the row as it is now"
    );
    assert_eq!(whole.cursor, 4);

    let updates = deltas.catch_up(order, &store).unwrap();
    let (key, op, _, patch) = changed(&updates[1]);
    assert_eq!((key.as_str(), op), ("o-1", "patch"));
    assert_eq!(
        patch.unwrap(),
        json!({"status": "shipped", "carrier": "DHL", "paid": true}),
        "the patch leads from the row the client has, skipping nothing"
    );
}

#[test]
fn resuming_tells_each_client_only_about_rows_it_saw() {
    let experience = storefront();
    let order = experience.projection("order").unwrap();
    let (_dir, store) = empty_store();
    commit(
        &store,
        vec![upsert("o-1", json!({"customerId": "alice", "total": 5}))],
    );
    commit(
        &store,
        vec![upsert("o-2", json!({"customerId": "bob", "total": 7}))],
    );
    // While both are away: bob's order changes, and alice's order moves to bob.
    commit(
        &store,
        vec![upsert("o-2", json!({"customerId": "bob", "total": 8}))],
    );
    commit(
        &store,
        vec![upsert("o-1", json!({"customerId": "bob", "total": 5}))],
    );

    let resume = |sub: &str| {
        let selection = Selection {
            projection: "order".into(),
            key: None,
            filter: Default::default(),
            delta: false,
        };
        let viewer = Viewer::Claims(json!({ "sub": sub }));
        let mut subscription = Subscription::new(selection, viewer);
        let updates = subscription.start(order, &store, Some(2)).unwrap();
        updates
            .iter()
            .map(|u| {
                let (key, op, _, _) = changed(u);
                format!("{op} {key}")
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        resume("alice"),
        ["remove o-1"],
        "alice hears of her order leaving her, and nothing of bob's"
    );
    assert_eq!(resume("bob"), ["upsert o-2", "upsert o-1"]);
    assert!(resume("carol").is_empty(), "carol never saw either row");
}
