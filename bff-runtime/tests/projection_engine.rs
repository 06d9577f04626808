//! The projection engine replaying each sample's events, with an in-memory table.

use std::path::Path;
use std::sync::Arc;

use facet_bff::dev::events::{events_file_for, read_events};
use facet_bff::projection::{Applied, ApplyError, Engine, MemoryRows, Record};
use facet_bff::spec::{compile, parse_manifests};
use serde_json::{json, Value};

type Tables = MemoryRows;

fn engine_for(sample: &str) -> Engine {
    let text = std::fs::read_to_string(sample_path(sample)).unwrap();
    let manifest = parse_manifests(&text).remove(0).unwrap();
    Engine::new(Arc::new(compile(&manifest.spec).unwrap()))
}

fn sample_path(sample: &str) -> String {
    format!(
        "{}/../config/samples/{sample}.yaml",
        env!("CARGO_MANIFEST_DIR")
    )
}

fn apply(
    engine: &Engine,
    tables: &mut Tables,
    source: &str,
    event: &Value,
) -> Result<(), ApplyError> {
    let applied = engine
        .apply(source, event, &Record::default(), tables)
        .unwrap()?;
    tables.write(&applied);
    Ok(())
}

fn served(tables: &Tables, projection: &str, key: &str) -> bool {
    tables
        .served()
        .contains_key(&(projection.to_string(), key.to_string()))
}

fn replay(sample: &str) -> Tables {
    let engine = engine_for(sample);
    let mut tables = Tables::default();
    let events = read_events(&events_file_for(Path::new(&sample_path(sample)))).unwrap();
    for event in events {
        apply(&engine, &mut tables, &event.source, &event.value).unwrap();
    }
    tables
}

fn row(tables: &Tables, projection: &str, key: &str) -> Value {
    Value::Object(tables.served()[&(projection.to_string(), key.to_string())].clone())
}

#[test]
fn storefront_orders_and_summaries() {
    let tables = replay("storefront");
    let order = row(&tables, "order", "o-1001");
    assert_eq!(order["status"], "shipped");
    assert_eq!(order["paid"], true);
    assert_eq!(order["carrier"], "DHL");
    assert_eq!(order["total"], 25.0);
    assert_eq!(order["items"][0]["quantity"], 2);
    assert_eq!(
        order["customer"],
        json!({"name": "Alice Hargreaves", "tier": "gold"})
    );
    // Its payment was read before it was placed.
    assert_eq!(row(&tables, "order", "o-1003")["paid"], true);
    // Cancelled before the shipping event: the `when` on row.status kept it cancelled.
    let cancelled = row(&tables, "order", "o-1002");
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(cancelled["carrier"], "");
    assert!(
        !served(&tables, "order", "o-1004"),
        "archived order deleted"
    );

    let alice = row(&tables, "customerSummary", "alice");
    assert_eq!(alice["orderCount"], 2);
    assert_eq!(alice["lifetimeValue"], 52.0);
    assert_eq!(alice["lastOrderId"], "o-1003");
    assert_eq!(alice["lastOrderAt"], "2026-11-02T10:00:00Z");
    let bob = row(&tables, "customerSummary", "bob");
    assert_eq!(bob["orderCount"], 0);
    assert_eq!(bob["lifetimeValue"], 0.0);
}

#[test]
fn blog_pages_and_comments_show_their_authors_as_they_are_now() {
    let tables = replay("blog-post");
    let post = row(&tables, "postPage", "p-1");
    assert_eq!(post["title"], "Event-driven BFFs, declared");
    // Renamed after the post was published: the page shows the current name.
    assert_eq!(
        post["author"],
        json!({"id": "u-ada", "name": "Ada, Countess of Lovelace",
               "avatarUrl": "https://avatars.example.com/ada.png"})
    );
    assert_eq!(post["commentCount"], 3);
    // Alan registered after commenting: the comment shows him once he exists.
    assert_eq!(
        row(&tables, "comment", "c-2")["author"],
        json!({"name": "Alan Turing", "avatarUrl": "https://avatars.example.com/alan.png"})
    );
    assert_eq!(
        row(&tables, "comment", "c-1")["author"]["avatarUrl"],
        "https://avatars.example.com/grace-2.png"
    );
    assert_eq!(
        row(&tables, "comment", "c-4")["author"]["name"],
        "Ada, Countess of Lovelace"
    );
    // Its comment was read before it: counted, then deleted.
    let other = row(&tables, "postPage", "p-2");
    assert_eq!(other["commentCount"], 0);
    assert_eq!(
        other["author"]["avatarUrl"],
        "https://avatars.example.com/grace-2.png"
    );
    assert!(!served(&tables, "comment", "c-3"));
    assert!(!served(&tables, "postPage", "p-3"));
}

#[test]
fn scheduler_slots_open_and_close_with_bookings() {
    let tables = replay("scheduler");
    let open = |slot: &str| row(&tables, "slot", slot)["open"].clone();
    assert_eq!(open("s-1"), false, "s-1 was booked");
    assert_eq!(open("s-2"), true);
    assert_eq!(open("s-3"), false, "s-3 was withdrawn");
    assert_eq!(open("s-4"), true, "s-4 open again after the cancellation");
    assert_eq!(open("s-5"), true);
    assert_eq!(row(&tables, "slot", "s-4")["timeZone"], "Asia/Tokyo");
    assert_eq!(row(&tables, "appointment", "a-1")["status"], "booked");
    assert_eq!(row(&tables, "appointment", "a-2")["status"], "cancelled");
    assert_eq!(row(&tables, "appointment", "a-2")["patientId"], "bob");
}

#[test]
fn an_event_is_applied_whole_or_not_at_all() {
    let engine = engine_for("storefront");
    let mut tables = Tables::default();
    // `total` is a string: the customerSummary rule fails on `double(...)`... but
    // the order rule before it succeeded. Neither change may land.
    let bad = json!({"type": "OrderPlaced", "orderId": "o-9", "customerId": "zed",
                     "items": [], "total": "lots", "at": "now"});
    let error = apply(&engine, &mut tables, "orders", &bad).unwrap_err();
    assert_eq!(error.reason(), "rule_error");
    assert!(
        error
            .to_string()
            .starts_with("spec.projections[0].rules[0].upsert.total: expected number, got string"),
        "{error}"
    );
    assert!(tables.served().is_empty(), "nothing applied: {tables:?}");
}

#[test]
fn events_without_a_key_are_rejected_only_when_a_rule_wants_them() {
    let engine = engine_for("storefront");
    let mut tables = Tables::default();
    let unrelated = json!({"type": "SomethingElse"});
    apply(&engine, &mut tables, "orders", &unrelated).unwrap();
    let keyless =
        json!({"type": "OrderPlaced", "customerId": "zed", "items": [], "total": 1.0, "at": "now"});
    let error = apply(&engine, &mut tables, "orders", &keyless).unwrap_err();
    assert_eq!(error.reason(), "no_key");
    assert_eq!(
        error.to_string(),
        "spec.projections[0].key: no row key: No such key: orderId"
    );
}

#[test]
fn undecodable_payload() {
    let engine = engine_for("storefront");
    let result = engine
        .apply_bytes(
            "orders",
            Some(b"{not json"),
            &Record::default(),
            &MemoryRows::default(),
        )
        .unwrap();
    assert_eq!(result.unwrap_err().reason(), "undecodable");
}

#[test]
fn a_patch_before_its_upsert_is_held_then_served_with_it() {
    let engine = engine_for("storefront");
    let mut tables = Tables::default();
    let payment = json!({"type": "PaymentCaptured", "orderId": "o-404"});
    apply(&engine, &mut tables, "payments", &payment).unwrap();
    assert!(tables.served().is_empty(), "a held row is not served");
    let placed = json!({"type": "OrderPlaced", "orderId": "o-404", "customerId": "alice",
        "items": [], "total": 5.0, "at": "2026-11-02T09:15:00Z"});
    apply(&engine, &mut tables, "orders", &placed).unwrap();
    let order = row(&tables, "order", "o-404");
    assert_eq!(
        order["paid"], true,
        "the payment read first is kept: {order}"
    );
    assert_eq!(order["status"], "placed");
}

/// A small experience for the record tests: rows keyed by the record key, with
/// the record's metadata, deleted by a tombstone.
fn record_engine() -> Engine {
    let spec = facet_bff::spec::spec_from_value(
        serde_yaml::from_str(
            r#"
kafka: {bootstrapServers: "localhost:9092"}
sources: [{name: users, topic: users.v1}]
projections:
  - name: user
    key: record.key
    rules:
      - source: users
        when: event != null
        upsert: {name: event.name, topic: record.topic, offset: record.offset,
                 at: record.timestamp, trace: 'has(record.headers.trace) ? record.headers.trace : ""'}
      - source: users
        when: event == null
        delete: true
    fields:
      name: {type: string}
      topic: {type: string}
      offset: {type: integer}
      at: {type: integer}
      trace: {type: string}
    access: "true"
auth: {anonymous: true}
"#,
        )
        .unwrap(),
    )
    .unwrap();
    Engine::new(Arc::new(compile(&spec).unwrap()))
}

fn apply_record(
    engine: &Engine,
    tables: &mut Tables,
    payload: Option<&[u8]>,
    record: &Record,
) -> Result<(), ApplyError> {
    let applied = engine
        .apply_bytes("users", payload, record, tables)
        .unwrap()?;
    tables.write(&applied);
    Ok(())
}

#[test]
fn rules_read_the_record_and_a_tombstone_deletes() {
    let engine = record_engine();
    let mut tables = Tables::default();
    let record = Record {
        key: Some("u-1".into()),
        topic: "users.v1".into(),
        partition: 2,
        offset: 41,
        timestamp: Some(1_700_000_000_000),
        headers: vec![("trace".into(), "t-9".into())],
    };
    apply_record(&engine, &mut tables, Some(br#"{"name": "Ada"}"#), &record).unwrap();
    assert_eq!(
        row(&tables, "user", "u-1"),
        json!({"name": "Ada", "topic": "users.v1", "offset": 41, "at": 1_700_000_000_000i64, "trace": "t-9"})
    );
    // The tombstone for the same key removes the row.
    apply_record(
        &engine,
        &mut tables,
        None,
        &Record {
            offset: 42,
            ..record.clone()
        },
    )
    .unwrap();
    assert!(tables.served().is_empty());
}

#[test]
fn a_tombstone_passes_over_rules_not_written_for_one() {
    // The storefront's rules all read `event.type`: a tombstone on its topic
    // changes nothing and is not an error.
    let engine = engine_for("storefront");
    let result = engine
        .apply_bytes("orders", None, &Record::default(), &MemoryRows::default())
        .unwrap();
    assert_eq!(result, Ok(Applied::default()));
}

#[test]
fn a_numeric_key_is_refused_not_turned_into_text() {
    let engine = engine_for("storefront");
    let error = apply(
        &engine,
        &mut Tables::default(),
        "orders",
        &json!({"type": "OrderPlaced", "orderId": 1001, "customerId": "alice", "total": 1.0, "at": "x"}),
    )
    .unwrap_err();
    assert_eq!(error.reason(), "no_key");
    assert_eq!(
        error.to_string(),
        "spec.projections[0].key: no row key: the key is the number 1001, not a string: \
         write string(...) around it to key rows by number"
    );
}

#[test]
fn oversized_and_too_deep_events_are_refused_by_reason() {
    let engine = engine_for("storefront");
    let reason = |payload: &[u8]| {
        engine
            .apply_bytes(
                "orders",
                Some(payload),
                &Record::default(),
                &MemoryRows::default(),
            )
            .unwrap()
            .unwrap_err()
            .reason()
    };
    let big = format!(
        r#"{{"pad": "{}"}}"#,
        "x".repeat(facet_bff::projection::MAX_EVENT_BYTES)
    );
    assert_eq!(reason(big.as_bytes()), "too_large");
    let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
    assert_eq!(reason(deep.as_bytes()), "too_deep");
}

/// Users, and posts that embed their author (at most 2 rewritten per change) and
/// look the author up once when published.
fn embed_engine() -> Engine {
    let spec = facet_bff::spec::spec_from_value(
        serde_yaml::from_str(
            r#"
kafka: {bootstrapServers: "localhost:9092"}
sources: [{name: users, topic: users.v1}, {name: posts, topic: posts.v1}]
projections:
  - name: user
    key: event.userId
    rules:
      - {source: users, when: 'event.type == "UserRegistered"', upsert: {id: event.userId, name: event.name}}
      - {source: users, when: 'event.type == "UserRenamed"', patch: {name: event.name}}
      - {source: users, when: 'event.type == "UserDeleted"', delete: true}
    fields: {id: {type: string}, name: {type: string}}
  - name: post
    key: event.postId
    rules:
      - source: posts
        when: event.type == "PostPublished"
        lookups: {writer: {projection: user, key: event.authorId}}
        upsert:
          authorId: event.authorId
          bylineAtPublish: 'lookup.writer == null ? "" : lookup.writer.name'
    fields: {authorId: {type: string}, bylineAtPublish: {type: string}}
    embeds:
      author: {projection: user, key: row.authorId, fields: [name], maxFanOut: 2}
auth: {anonymous: true}
"#,
        )
        .unwrap(),
    )
    .unwrap();
    Engine::new(Arc::new(compile(&spec).unwrap()))
}

fn user_event(kind: &str, id: &str, name: &str) -> Value {
    json!({"type": kind, "userId": id, "name": name})
}

fn post_event(post: &str, author: &str) -> Value {
    json!({"type": "PostPublished", "postId": post, "authorId": author})
}

#[test]
fn an_embed_follows_its_row_and_the_key_it_points_at() {
    let engine = embed_engine();
    let mut rows = Tables::default();
    // Published before its author exists: no author yet, and the lookup found none.
    apply(&engine, &mut rows, "posts", &post_event("p-1", "u-1")).unwrap();
    assert_eq!(row(&rows, "post", "p-1")["author"], Value::Null);
    assert_eq!(row(&rows, "post", "p-1")["bylineAtPublish"], "");
    apply(
        &engine,
        &mut rows,
        "users",
        &user_event("UserRegistered", "u-1", "Ada"),
    )
    .unwrap();
    assert_eq!(row(&rows, "post", "p-1")["author"], json!({"name": "Ada"}));
    apply(
        &engine,
        &mut rows,
        "users",
        &user_event("UserRegistered", "u-2", "Bob"),
    )
    .unwrap();
    // The lookup reads the row as it is when the event applies.
    apply(&engine, &mut rows, "posts", &post_event("p-2", "u-2")).unwrap();
    assert_eq!(row(&rows, "post", "p-2")["bylineAtPublish"], "Bob");
    // Re-pointed at Bob: Ada's rename no longer reaches it.
    apply(&engine, &mut rows, "posts", &post_event("p-1", "u-2")).unwrap();
    assert_eq!(row(&rows, "post", "p-1")["author"], json!({"name": "Bob"}));
    let applied = engine
        .apply(
            "users",
            &user_event("UserRenamed", "u-1", "Ada L."),
            &Record::default(),
            &rows,
        )
        .unwrap()
        .unwrap();
    assert_eq!(
        applied.changes.len(),
        1,
        "only the user changes: {applied:?}"
    );
    rows.write(&applied);
    // Bob renamed: both his posts change in the same event, after his own row.
    let applied = engine
        .apply(
            "users",
            &user_event("UserRenamed", "u-2", "Robert"),
            &Record::default(),
            &rows,
        )
        .unwrap()
        .unwrap();
    let changed: Vec<(&str, &str)> = applied
        .changes
        .iter()
        .map(|c| (c.projection.as_str(), c.key.as_str()))
        .collect();
    assert_eq!(changed, [("user", "u-2"), ("post", "p-1"), ("post", "p-2")]);
    assert_eq!(applied.fanned_out, 2);
    rows.write(&applied);
    // Deleted: the posts show no author, and get it back if the user returns.
    apply(
        &engine,
        &mut rows,
        "users",
        &user_event("UserDeleted", "u-2", ""),
    )
    .unwrap();
    assert_eq!(row(&rows, "post", "p-2")["author"], Value::Null);
    apply(
        &engine,
        &mut rows,
        "users",
        &user_event("UserRegistered", "u-2", "Bob"),
    )
    .unwrap();
    assert_eq!(row(&rows, "post", "p-2")["author"], json!({"name": "Bob"}));
}

#[test]
fn a_change_that_would_rewrite_more_than_max_fan_out_rows_is_refused_whole() {
    let engine = embed_engine();
    let mut rows = Tables::default();
    apply(
        &engine,
        &mut rows,
        "users",
        &user_event("UserRegistered", "u-1", "Ada"),
    )
    .unwrap();
    for post in ["p-1", "p-2", "p-3"] {
        apply(&engine, &mut rows, "posts", &post_event(post, "u-1")).unwrap();
    }
    let before = rows.clone();
    let error = apply(
        &engine,
        &mut rows,
        "users",
        &user_event("UserRenamed", "u-1", "Ada L."),
    )
    .unwrap_err();
    assert_eq!(error.reason(), "fan_out");
    assert_eq!(
        error.to_string(),
        "spec.projections[1].embeds.author: a change of `user` row `u-1` would rewrite more \
         than 2 `post` rows that embed it (maxFanOut)"
    );
    assert_eq!(rows, before, "nothing of the event was applied");
}

/// Regression (issue 24): a division by zero was stored as `null`, even in an
/// integer field. JSON has no infinity or NaN, so the event is refused.
#[test]
fn a_non_finite_number_is_a_rule_error_not_a_null() {
    let manifest = r#"
apiVersion: facet.dev/v1alpha1
kind: FrontendExperience
metadata: {name: ratios}
spec:
  kafka: {bootstrapServers: "localhost:9092"}
  auth: {anonymous: true}
  sources: [{name: s, topic: t}]
  projections:
    - name: stat
      key: event.id
      rules:
        - source: s
          when: event.type == "number"
          upsert: {ratio: event.a / event.b}
        - source: s
          when: event.type == "integer"
          upsert: {count: event.a / event.b}
        - source: s
          when: event.type == "nested"
          upsert: {series: "[1.0, event.a / event.b]"}
      fields:
        ratio: {type: number}
        count: {type: integer}
        series: {type: array, items: {type: number}}
"#;
    let manifest = parse_manifests(manifest).remove(0).unwrap();
    let engine = Engine::new(Arc::new(compile(&manifest.spec).unwrap()));
    let mut tables = Tables::default();
    for (kind, a, b) in [
        ("number", 1.0, 0.0),
        ("number", 0.0, 0.0),
        ("integer", 1.0, 0.0),
        ("nested", -1.0, 0.0),
    ] {
        let event = json!({"type": kind, "id": "x", "a": a, "b": b});
        let error = apply(&engine, &mut tables, "s", &event).unwrap_err();
        assert_eq!(error.reason(), "rule_error", "{kind} {a}/{b}: {error}");
        assert!(
            error.to_string().contains("cannot be stored in a row"),
            "{error}"
        );
    }
    assert!(tables.served().is_empty(), "nothing stored: {tables:?}");
    let fine = json!({"type": "number", "id": "x", "a": 3.0, "b": 2.0});
    apply(&engine, &mut tables, "s", &fine).unwrap();
    assert_eq!(row(&tables, "stat", "x")["ratio"], 1.5);
}
