//! The live core without a network: sessions over a real store and the router.
//! Snapshots, changes without gap or duplicate, resumes across replicas that read
//! partitions in a different order, resets, catch-ups and the index.

use std::sync::Arc;

use facet_bff::live::{Close, Hub, Router, Selection, Session, Update};
use facet_bff::metrics::Metrics;
use facet_bff::projection::{RowChange, RowOp};
use facet_bff::serve::access::Viewer;
use facet_bff::spec::{compile, parse_manifests, CompiledExperience, ExperienceSpec};
use facet_bff::store::Store;
use serde_json::json;

const ORDERS: &str = "shop.orders.v1";

fn storefront_spec() -> ExperienceSpec {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../config/samples/storefront.yaml"
    );
    parse_manifests(&std::fs::read_to_string(path).unwrap())
        .remove(0)
        .unwrap()
        .spec
}

struct Replica {
    _dir: tempfile::TempDir,
    engine: Arc<Hub>,
}

fn replica_of(spec: &ExperienceSpec) -> Replica {
    let experience: Arc<CompiledExperience> = Arc::new(compile(spec).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(&dir.path().join("db"), experience.store_layout()).unwrap();
    let engine = Hub::new(
        experience,
        Arc::new(store),
        Router::new(),
        Arc::new(Metrics::new()),
    );
    Replica { _dir: dir, engine }
}

fn replica() -> Replica {
    replica_of(&storefront_spec())
}

fn order(key: &str, customer: &str, total: i64) -> RowChange {
    RowChange {
        projection: "order".into(),
        key: key.into(),
        op: RowOp::Upsert(
            json!({"id": key, "customerId": customer, "total": total})
                .as_object()
                .unwrap()
                .clone(),
        ),
    }
}

impl Replica {
    /// Applies records (partition, offset, change) in this order, in one batch, and
    /// publishes the result.
    fn read(&self, records: &[(i32, i64, RowChange)]) {
        let mut batch = self.engine.store.batch().unwrap();
        for (partition, offset, change) in records {
            batch.read_record(ORDERS, *partition, *offset);
            batch.apply(vec![change.clone()], None).unwrap();
        }
        let changes = batch.commit().unwrap();
        self.engine.router.publish(changes);
    }

    fn session(&self, viewer: Viewer) -> Session {
        Session::new(self.engine.clone(), viewer, "test")
    }
}

fn user(sub: &str) -> Viewer {
    Viewer::Claims(json!({ "sub": sub }))
}

fn orders() -> Selection {
    Selection {
        projection: "order".into(),
        ..Selection::default()
    }
}

/// "op key total" for each update, "snapshot [keys]" and "reset".
fn describe(updates: &[Update]) -> Vec<String> {
    updates
        .iter()
        .map(|u| match u {
            Update::Snapshot { rows, .. } => {
                format!(
                    "snapshot {:?}",
                    rows.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>()
                )
            }
            Update::Change { op, change } => match &change.row {
                Some(row) if op.as_str() == "upsert" => {
                    format!("upsert {} {}", change.key, row["total"])
                }
                _ => format!("{} {}", op.as_str(), change.key),
            },
            Update::Reset { .. } => "reset".into(),
        })
        .collect()
}

fn position_of(updates: &[Update]) -> String {
    updates
        .iter()
        .rev()
        .find_map(|u| match u {
            Update::Snapshot { position, .. } => Some(position.clone()),
            Update::Change { change, .. } => Some(change.position.clone()),
            Update::Reset { .. } => None,
        })
        .unwrap()
}

async fn drain(session: &mut Session) -> Vec<Update> {
    session
        .drain()
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.update)
        .collect()
}

#[tokio::test]
async fn a_subscription_gets_its_rows_then_each_change_once() {
    let r = replica();
    r.read(&[
        (0, 0, order("o-1", "alice", 1)),
        (0, 1, order("o-2", "bob", 2)),
    ]);
    let mut alice = r.session(user("alice"));
    let first = alice.subscribe("s", orders(), None).await.unwrap();
    assert_eq!(describe(&first), ["snapshot [\"o-1\"]"]);
    r.read(&[
        (0, 2, order("o-1", "alice", 10)),
        (0, 3, order("o-3", "bob", 3)),
        (0, 4, order("o-2", "alice", 20)),
    ]);
    assert_eq!(
        describe(&drain(&mut alice).await),
        ["upsert o-1 10", "upsert o-2 20"]
    );
    r.read(&[(0, 5, order("o-1", "bob", 10))]);
    assert_eq!(
        describe(&drain(&mut alice).await),
        ["remove o-1"],
        "a row that leaves her is removed"
    );
    assert!(drain(&mut alice).await.is_empty());
}

#[tokio::test]
async fn a_change_committed_before_the_snapshot_but_routed_after_it_is_not_sent_twice() {
    let r = replica();
    let mut batch = r.engine.store.batch().unwrap();
    batch.read_record(ORDERS, 0, 0);
    batch.apply(vec![order("o-1", "alice", 1)], None).unwrap();
    let committed = batch.commit().unwrap();
    let mut alice = r.session(user("alice"));
    let first = alice.subscribe("s", orders(), None).await.unwrap();
    assert_eq!(describe(&first), ["snapshot [\"o-1\"]"]);
    r.engine.router.publish(committed);
    assert!(
        drain(&mut alice).await.is_empty(),
        "the snapshot already had it"
    );
}

#[tokio::test]
async fn resuming_on_another_replica_gets_exactly_what_was_missed() {
    let (a, b) = (replica(), replica());
    let early = [
        (0, 0, order("o-1", "alice", 1)),
        (1, 0, order("o-2", "alice", 2)),
    ];
    a.read(&early);
    // Replica b reads the same records, partition 1 first.
    b.read(&[early[1].clone(), early[0].clone()]);
    let mut on_a = a.session(user("alice"));
    let first = on_a.subscribe("s", orders(), None).await.unwrap();
    let since = position_of(&first);
    let later = [
        (1, 1, order("o-2", "alice", 20)),
        (0, 1, order("o-3", "bob", 3)),
        (0, 2, order("o-4", "alice", 4)),
    ];
    a.read(&later);
    b.read(&[later[2].clone(), later[0].clone(), later[1].clone()]);
    let mut on_b = b.session(user("alice"));
    let resumed = on_b.subscribe("s", orders(), Some(&since)).await.unwrap();
    let mut seen = describe(&resumed);
    seen.sort();
    assert_eq!(
        seen,
        ["upsert o-2 20", "upsert o-4 4"],
        "no snapshot, nothing twice, nothing of bob's"
    );
    // From its last position, a third resume (back on a) has nothing left to send.
    let mut again = a.session(user("alice"));
    let nothing = again
        .subscribe("s", orders(), Some(&position_of(&resumed)))
        .await
        .unwrap();
    assert!(describe(&nothing).is_empty(), "{:?}", describe(&nothing));
}

#[tokio::test]
async fn resuming_tells_each_client_only_about_rows_it_saw() {
    let r = replica();
    r.read(&[
        (0, 0, order("o-1", "alice", 5)),
        (0, 1, order("o-2", "bob", 7)),
    ]);
    let since = r.engine.store.codec().encode(&r.engine.store.position());
    // While everyone is away: bob's order changes, and alice's order moves to bob.
    r.read(&[
        (0, 2, order("o-2", "bob", 8)),
        (0, 3, order("o-1", "bob", 5)),
    ]);
    let resume = |who: &'static str| {
        let since = since.clone();
        let mut session = r.session(user(who));
        async move {
            describe(
                &session
                    .subscribe("s", orders(), Some(&since))
                    .await
                    .unwrap(),
            )
        }
    };
    assert_eq!(
        resume("alice").await,
        ["remove o-1"],
        "alice hears of her order leaving, and nothing of bob's"
    );
    assert_eq!(resume("bob").await, ["upsert o-2 8", "upsert o-1 5"]);
    assert!(
        resume("carol").await.is_empty(),
        "carol never saw either row"
    );
}

#[tokio::test]
async fn a_position_that_cannot_be_proven_gets_a_reset_and_a_snapshot() {
    let r = replica();
    r.read(&[(0, 0, order("o-1", "alice", 1))]);
    let mut session = r.session(user("alice"));
    // Issued by a store built from another definition of the projections.
    let mut rebuilt = storefront_spec();
    rebuilt.projections[0].fields.remove("carrier");
    rebuilt.projections[0].rules.iter_mut().for_each(|rule| {
        rule.patch.as_mut().map(|p| p.remove("carrier"));
    });
    let other = replica_of(&rebuilt);
    other.read(&[(0, 0, order("o-1", "alice", 1))]);
    let foreign = other
        .engine
        .store
        .codec()
        .encode(&other.engine.store.position());
    let updates = session
        .subscribe("s", orders(), Some(&foreign))
        .await
        .unwrap();
    assert_eq!(describe(&updates), ["reset", "snapshot [\"o-1\"]"]);
    // A position further on than this replica gets (after a wait) a reset too.
    let ahead = r.engine.store.codec().encode(&{
        let mut p = r.engine.store.position();
        p.advance(ORDERS, 0, 99);
        p
    });
    let started = std::time::Instant::now();
    let updates = session
        .subscribe("s", orders(), Some(&ahead))
        .await
        .unwrap();
    assert_eq!(describe(&updates), ["reset", "snapshot [\"o-1\"]"]);
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(4),
        "it waited for this replica to catch up first"
    );
    assert!(session
        .subscribe("s", orders(), Some("not-a-position"))
        .await
        .is_err());
}

#[tokio::test]
async fn a_user_with_twenty_rows_among_fifty_thousand_gets_all_twenty() {
    let r = replica();
    let records: Vec<_> = (0..50_000i64)
        .map(|n| {
            let customer = if n % 2_500 == 7 {
                "alice".to_string()
            } else {
                format!("c-{}", n % 997)
            };
            (0, n, order(&format!("o-{n:05}"), &customer, n))
        })
        .collect();
    r.read(&records);
    let mut alice = r.session(user("alice"));
    let first = alice.subscribe("s", orders(), None).await.unwrap();
    let Update::Snapshot { rows, .. } = &first[0] else {
        panic!()
    };
    assert_eq!(rows.len(), 20);
    assert!(rows.iter().all(|(_, row)| row["customerId"] == "alice"));
}

#[tokio::test]
async fn a_snapshot_larger_than_a_page_comes_in_pages_at_one_position_then_the_catch_up() {
    const ROWS: i64 = 25_000;
    let r = replica();
    let records: Vec<_> = (0..ROWS)
        .map(|n| (0, n, order(&format!("o-{n:05}"), "c", n)))
        .collect();
    r.read(&records);
    let mut console = r.session(Viewer::Console);
    let first = console.subscribe("s", orders(), None).await.unwrap();
    let Update::Snapshot {
        rows,
        more: true,
        position,
    } = &first[0]
    else {
        panic!("a first page with more to come: {:?}", describe(&first))
    };
    assert_eq!(rows.len(), facet_bff::live::session::SNAPSHOT_PAGE);
    let frozen = position.clone();
    let mut seen: Vec<String> = rows.iter().map(|(k, _)| k.clone()).collect();
    // Committed while the pages go: a row already sent, one not yet sent and a
    // new one. The pages show none of them; the catch-up after them all three.
    r.read(&[
        (0, ROWS, order("o-00001", "c", -1)),
        (0, ROWS + 1, order("o-24000", "c", -2)),
        (0, ROWS + 2, order("o-99999", "c", -3)),
    ]);
    let mut after = Vec::new();
    loop {
        console.wait().await.unwrap();
        let updates = drain(&mut console).await;
        let last = updates
            .iter()
            .any(|u| matches!(u, Update::Snapshot { more: false, .. }));
        for update in updates {
            match update {
                Update::Snapshot { rows, position, .. } => {
                    assert_eq!(position, frozen, "every page is at one position");
                    assert!(after.is_empty(), "no change before the last page");
                    seen.extend(rows.into_iter().map(|(k, row)| {
                        assert!(row["total"].as_i64().unwrap() >= 0, "{k} as frozen");
                        k
                    }));
                }
                other => after.push(other),
            }
        }
        if last {
            break;
        }
    }
    let expected: Vec<String> = (0..ROWS).map(|n| format!("o-{n:05}")).collect();
    assert_eq!(seen, expected, "every row once, in key order");
    assert_eq!(
        describe(&after),
        [
            "upsert o-00001 -1",
            "upsert o-24000 -2",
            "upsert o-99999 -3"
        ]
    );
    // Then live.
    r.read(&[(0, ROWS + 3, order("o-00002", "c", -4))]);
    console.wait().await.unwrap();
    assert_eq!(describe(&drain(&mut console).await), ["upsert o-00002 -4"]);
}

#[tokio::test]
async fn a_client_that_falls_behind_catches_up_once_per_row_or_is_closed() {
    let mut spec = storefront_spec();
    spec.api.limits.max_pending_rows = 10;
    let r = replica_of(&spec);
    let mut whole = r.session(Viewer::Console);
    let mut deltas = r.session(Viewer::Console);
    whole.subscribe("s", orders(), None).await.unwrap();
    deltas
        .subscribe(
            "s",
            Selection {
                delta: true,
                ..orders()
            },
            None,
        )
        .await
        .unwrap();
    // 30 changes to 3 rows: more than the outbox holds, fewer rows than the limit.
    let records: Vec<_> = (0..30i64)
        .map(|n| (0, n, order(&format!("o-{}", n % 3), "alice", n)))
        .collect();
    r.read(&records);
    let mut caught_up = describe(&drain(&mut whole).await);
    caught_up.sort();
    assert_eq!(
        caught_up,
        ["upsert o-0 27", "upsert o-1 28", "upsert o-2 29"]
    );
    let updates = drain(&mut deltas).await;
    assert!(
        updates
            .iter()
            .all(|u| matches!(u, Update::Change { op, .. } if op.as_str() == "upsert")),
        "after a catch-up a delta client gets whole rows"
    );
    r.read(&[(0, 30, order("o-0", "alice", 30))]);
    assert_eq!(
        describe(&drain(&mut deltas).await),
        ["patch o-0"],
        "then patches again"
    );
    // 30 changes to 30 rows: too many to catch up with.
    let records: Vec<_> = (31..61i64)
        .map(|n| (0, n, order(&format!("n-{n}"), "alice", n)))
        .collect();
    r.read(&records);
    assert!(matches!(whole.drain().await, Err(Close::TooSlow)));
}

/// An access edit keeps the store (and the definition): a client resuming from a
/// position issued under the old rule gets no reset: the rows it may now see, a
/// removal for each it may no longer see, and what it missed; then it holds
/// exactly what a fresh subscription under the new rule gets.
#[tokio::test]
async fn a_resume_after_an_access_edit_sends_what_the_new_rule_changes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let open = |spec: &ExperienceSpec| {
        let experience = Arc::new(compile(spec).unwrap());
        let (store, _) = Store::open(&path, experience.store_layout()).unwrap();
        Replica {
            _dir: tempfile::tempdir().unwrap(),
            engine: Hub::new(
                experience,
                Arc::new(store),
                Router::new(),
                Arc::new(Metrics::new()),
            ),
        }
    };
    let before = storefront_spec();
    let mut after = before.clone();
    let order_projection = after
        .projections
        .iter_mut()
        .find(|p| p.name == "order")
        .unwrap();
    // Alice now also sees every large order, but no longer her small ones.
    order_projection.access =
        Some("(row.customerId == auth.sub && row.total >= 5) || row.total >= 100".into());
    assert_eq!(
        compile(&before).unwrap().definition_hash,
        compile(&after).unwrap().definition_hash,
        "access is not part of the definition"
    );

    let old = open(&before);
    old.read(&[
        (0, 0, order("o-1", "alice", 1)),
        (0, 1, order("o-2", "alice", 7)),
        (0, 2, order("o-3", "bob", 200)),
        (0, 3, order("o-4", "bob", 3)),
        (0, 4, order("o-5", "alice", 2)),
    ]);
    let mut alice = old.session(user("alice"));
    let first = alice.subscribe("s", orders(), None).await.unwrap();
    assert_eq!(describe(&first), ["snapshot [\"o-1\", \"o-2\", \"o-5\"]"]);
    let since = position_of(&first);
    drop(alice);
    drop(old);

    // The pods roll with the new rule on the same store, and read on meanwhile.
    let new = open(&after);
    new.read(&[
        (0, 5, order("o-5", "alice", 6)),
        (0, 6, order("o-6", "bob", 150)),
    ]);
    let mut alice = new.session(user("alice"));
    let resumed = alice.subscribe("s", orders(), Some(&since)).await.unwrap();
    let mut described = describe(&resumed);
    described.sort();
    assert_eq!(
        described,
        [
            "remove o-1",     // hers, but small now
            "upsert o-3 200", // bob's, large
            "upsert o-5 6",   // missed, and visible under the new rule
            "upsert o-6 150", // missed, and visible
        ],
        "no reset, no snapshot"
    );
    // Every later position carries the new rule: resuming from it sends nothing more.
    let now = position_of(&resumed);
    assert_ne!(now, since);
    let mut again = new.session(user("alice"));
    let nothing = again.subscribe("s", orders(), Some(&now)).await.unwrap();
    assert!(describe(&nothing).is_empty(), "{:?}", describe(&nothing));
    // What she holds equals a fresh subscription's snapshot under the new rule.
    let mut fresh = new.session(user("alice"));
    let snapshot = fresh.subscribe("s", orders(), None).await.unwrap();
    assert_eq!(
        describe(&snapshot),
        ["snapshot [\"o-2\", \"o-3\", \"o-5\", \"o-6\"]"]
    );
}
