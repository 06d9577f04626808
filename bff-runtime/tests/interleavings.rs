//! Results do not depend on the order in which partitions are read: each sample's
//! events, split into partitions as Kafka would keep them (per topic, by key), are
//! applied to a real store in many interleavings and batchings, and every one
//! must end with the same rows, row for row.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use facet_bff::dev::events::{events_file_for, read_events, SampleEvent};
use facet_bff::projection::{Engine, Record, Row};
use facet_bff::spec::{compile, parse_manifests, CompiledExperience};
use facet_bff::store::Store;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

const PARTITIONS: u64 = 3;

/// Every served row, by (projection, key).
type Rows = BTreeMap<(String, String), Row>;

struct Sample {
    engine: Engine,
    /// Per (topic, partition), the events in offset order.
    partitions: Vec<((String, i32), Vec<SampleEvent>)>,
}

fn sample(name: &str) -> Sample {
    let path = format!(
        "{}/../config/samples/{name}.yaml",
        env!("CARGO_MANIFEST_DIR")
    );
    let spec = parse_manifests(&std::fs::read_to_string(&path).unwrap())
        .remove(0)
        .unwrap()
        .spec;
    let experience = Arc::new(compile(&spec).unwrap());
    let mut partitions: BTreeMap<(String, i32), Vec<SampleEvent>> = BTreeMap::new();
    for event in read_events(&events_file_for(Path::new(&path))).unwrap() {
        let topic = topic_of(&experience, &event.source);
        partitions
            .entry((topic, partition_of(event.key.as_deref())))
            .or_default()
            .push(event);
    }
    Sample {
        engine: Engine::new(experience),
        partitions: partitions.into_iter().collect(),
    }
}

fn topic_of(experience: &CompiledExperience, source: &str) -> String {
    let source = experience.spec.sources.iter().find(|s| s.name == source);
    source.unwrap().topic.clone()
}

/// Events with one key share a partition (FNV-1a; any stable hash will do).
fn partition_of(key: Option<&str>) -> i32 {
    let hash = key
        .unwrap_or("")
        .bytes()
        .fold(0xcbf29ce484222325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
        });
    (hash % PARTITIONS) as i32
}

/// Applies the events in the order `picks` chooses among the partitions (each pick
/// takes the next event of one partition), committing a batch every `batch` events,
/// with changes to one row in a batch coalesced (as replay batches do) or not.
/// Returns every served row and the order the events were read in.
fn replay(
    sample: &Sample,
    picks: &[usize],
    batch: usize,
    coalesce: bool,
) -> (Rows, Vec<(String, i32)>) {
    let dir = tempfile::tempdir().unwrap();
    let experience = sample.engine.experience();
    let (store, _) = Store::open(&dir.path().join("db"), experience.store_layout()).unwrap();
    let mut next = vec![0usize; sample.partitions.len()];
    let mut order = Vec::new();
    let mut picks = picks.iter().cycle();
    let new_batch = || match coalesce {
        true => store.batch().unwrap().coalescing(),
        false => store.batch().unwrap(),
    };
    let mut pending = new_batch();
    let mut in_batch = 0;
    while next
        .iter()
        .zip(&sample.partitions)
        .any(|(n, (_, events))| *n < events.len())
    {
        let open: Vec<usize> = (0..next.len())
            .filter(|&p| next[p] < sample.partitions[p].1.len())
            .collect();
        let p = open[picks.next().copied().unwrap_or(0) % open.len()];
        let ((topic, partition), events) = &sample.partitions[p];
        let event = &events[next[p]];
        let offset = next[p] as i64;
        next[p] += 1;
        order.push((topic.clone(), *partition));

        pending.read_record(topic, *partition, offset);
        let record = Record {
            key: event.key.clone(),
            topic: topic.clone(),
            partition: *partition,
            offset,
            ..Record::default()
        };
        let applied = sample
            .engine
            .apply(&event.source, &event.value, &record, &pending)
            .unwrap()
            .unwrap_or_else(|e| panic!("{e}: {event:?}"));
        pending.apply_event(applied, None).unwrap();
        in_batch += 1;
        if in_batch == batch {
            pending.commit().unwrap();
            pending = new_batch();
            in_batch = 0;
        }
    }
    pending.commit().unwrap();
    let view = store.view().unwrap();
    let mut rows = BTreeMap::new();
    for projection in &experience.projections {
        for (key, row) in view
            .rows(&projection.name, None, None, usize::MAX, |_, _| true)
            .unwrap()
        {
            rows.insert((projection.name.clone(), key), row);
        }
    }
    assert_index_agrees(&view, experience, &rows);
    (rows, order)
}

/// Every indexed lookup finds exactly the rows whose field has the value: the
/// index entries a batch removes are those of the row before it.
fn assert_index_agrees(
    view: &facet_bff::store::View<'_>,
    experience: &CompiledExperience,
    rows: &Rows,
) {
    for projection in &experience.projections {
        let name = &projection.name;
        for field in experience
            .store_layout()
            .indexed
            .get(name)
            .into_iter()
            .flatten()
        {
            let values: std::collections::BTreeSet<String> = rows
                .iter()
                .filter(|((p, _), _)| p == name)
                .filter_map(|(_, row)| row.get(field).map(|v| v.to_string()))
                .collect();
            for value in values {
                let value: serde_json::Value = serde_json::from_str(&value).unwrap();
                let found: Vec<String> = view
                    .rows(name, None, Some((field, &value)), usize::MAX, |_, _| true)
                    .unwrap()
                    .into_iter()
                    .map(|(key, _)| key)
                    .collect();
                let expected: Vec<String> = rows
                    .iter()
                    .filter(|((p, _), row)| p == name && row.get(field) == Some(&value))
                    .map(|((_, key), _)| key.clone())
                    .collect();
                assert_eq!(found, expected, "{name}.{field} == {value}");
            }
        }
    }
}

fn same_rows_in_every_interleaving(name: &str, cases: u32) {
    let sample = sample(name);
    // The order the file lists them in: one interleaving among many.
    let (expected, _) = replay(&sample, &[0], usize::MAX, false);
    assert!(!expected.is_empty());
    let orders = std::cell::RefCell::new(std::collections::BTreeSet::new());
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = (
        prop::collection::vec(0usize..64, 1..64),
        1usize..6,
        any::<bool>(),
    );
    runner
        .run(&strategy, |(picks, batch, coalesce)| {
            let (rows, order) = replay(&sample, &picks, batch, coalesce);
            orders.borrow_mut().insert(order);
            for (id, row) in &expected {
                prop_assert_eq!(rows.get(id), Some(row), "row {:?}", id);
            }
            prop_assert_eq!(rows.len(), expected.len(), "rows: {:?}", rows.keys());
            Ok(())
        })
        .unwrap();
    // The property is only as strong as the orders it tried.
    let distinct = orders.borrow().len();
    assert!(
        distinct >= (cases / 4) as usize,
        "{name}: only {distinct} distinct interleavings"
    );
}

#[test]
fn storefront_rows_do_not_depend_on_the_order_partitions_are_read() {
    same_rows_in_every_interleaving("storefront", 96);
}

#[test]
fn blog_rows_do_not_depend_on_the_order_partitions_are_read() {
    same_rows_in_every_interleaving("blog-post", 96);
}

#[test]
fn scheduler_rows_do_not_depend_on_the_order_partitions_are_read() {
    same_rows_in_every_interleaving("scheduler", 96);
}
