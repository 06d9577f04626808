//! Projections from real domain events on a real Kafka broker:
//! - the blog sample: renaming a user reaches every post page and comment that
//!   shows them, live over the native WebSocket and GraphQL subscriptions;
//! - the storefront sample: payments produced before their orders are all kept,
//!   and a second replica replaying the same topics equals the live pod row for row.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use facet_e2e::kafka::{Broker, TestProducer};
use facet_e2e::process::Runtime;
use facet_e2e::{log_dir, repo_root, wait_for};
use serde_json::{json, Value};

fn sample(name: &str) -> String {
    std::fs::read_to_string(repo_root().join(format!("config/samples/{name}.yaml"))).unwrap()
}

fn send(producer: &TestProducer, topic: &str, key: &str, event: Value) {
    producer.send(topic, key, event.to_string().as_bytes());
}

/// The next text message as JSON, unless the deadline has passed.
fn next_json<S: std::io::Read + std::io::Write>(
    socket: &mut tungstenite::WebSocket<S>,
    deadline: Instant,
) -> Value {
    assert!(Instant::now() < deadline, "timed out reading the socket");
    facet_e2e::next_json(socket)
}

#[test]
fn renaming_a_user_reaches_every_page_and_comment_that_shows_them_live() {
    let logs = log_dir("embeds_kafka_rename");
    let broker = Broker::start(&logs);
    for topic in ["blog.posts.v1", "blog.comments.v1", "blog.users.v1"] {
        broker.create_topic(topic, 3);
    }
    let producer = broker.producer();
    let user = |id: &str, name: &str| {
        json!({"type": "UserRegistered", "userId": id, "name": name,
               "avatarUrl": format!("https://avatars.example.com/{id}.png")})
    };
    send(
        &producer,
        "blog.users.v1",
        "u-ada",
        user("u-ada", "Ada Lovelace"),
    );
    send(&producer, "blog.users.v1", "u-bob", user("u-bob", "Bob"));
    // Ada writes 6 posts and 12 comments (some under Bob's post); Bob one of each.
    let mut ada_posts = BTreeSet::new();
    let mut ada_comments = BTreeSet::new();
    for (post, author) in (0..6)
        .map(|i| (format!("p-{i}"), "u-ada"))
        .chain([("p-bob".to_string(), "u-bob")])
    {
        let published = json!({"type": "PostPublished", "postId": post, "authorId": author,
            "title": format!("Post {post}"), "body": "b", "at": "2026-12-01T08:00:00Z"});
        send(&producer, "blog.posts.v1", &post, published);
        if author == "u-ada" {
            ada_posts.insert(post);
        }
    }
    for i in 0..13 {
        let (comment, author) = match i {
            12 => ("c-bob".to_string(), "u-bob"),
            _ => (format!("c-{i}"), "u-ada"),
        };
        let post = if i % 2 == 0 {
            "p-bob".to_string()
        } else {
            format!("p-{}", i % 6)
        };
        let added = json!({"type": "CommentAdded", "postId": post, "commentId": comment,
            "authorId": author, "text": "hello", "at": "2026-12-01T09:00:00Z"});
        send(&producer, "blog.comments.v1", &post, added);
        if author == "u-ada" {
            ada_comments.insert(comment);
        }
    }
    producer.flush();

    let work = tempfile::tempdir().unwrap();
    let spec = work.path().join("blog.yaml");
    std::fs::write(&spec, sample("blog-post")).unwrap();
    let mut runtime = Runtime::start(
        &spec,
        &work.path().join("data"),
        &broker.bootstrap(),
        "blog-post-page-0",
        &logs.join("runtime.log"),
    );
    runtime.wait_ready(Duration::from_secs(60));
    assert_eq!(runtime.all_rows("comment").len(), 13);
    let page = runtime.get("/v1/postPage/p-0").unwrap().1;
    assert_eq!(page["author"]["name"], "Ada Lovelace", "{page}");

    let address = format!("127.0.0.1:{}", runtime.http);
    let (mut socket, _) = tungstenite::connect(format!("ws://{address}/ws")).unwrap();
    socket
        .send(tungstenite::Message::text(
            json!({"type": "subscribe", "id": "c", "projection": "comment"}).to_string(),
        ))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    assert_eq!(next_json(&mut socket, deadline)["type"], "snapshot");
    let mut graphql = facet_e2e::graphql_subscription(
        &address,
        "subscription { postPage { op key row { id author { name avatarUrl } } } }",
    );

    // The subscription has started once its snapshot (one event per page) is in.
    for _ in 0..ada_posts.len() + 1 {
        let message = next_json(&mut graphql, deadline);
        assert_eq!(
            message["payload"]["data"]["postPage"]["op"], "snapshot",
            "{message}"
        );
    }

    let renamed = json!({"type": "UserRenamed", "userId": "u-ada", "name": "Ada King"});
    send(&producer, "blog.users.v1", "u-ada", renamed);
    producer.flush();

    // Every comment Ada wrote, and nothing else, changes on the WebSocket.
    let mut comments = BTreeSet::new();
    while comments != ada_comments {
        let message = next_json(&mut socket, deadline);
        assert_eq!(message["type"], "change", "{message}");
        let key = message["key"].as_str().unwrap().to_string();
        assert!(
            ada_comments.contains(&key),
            "only Ada's comments change: {message}"
        );
        assert_eq!(
            message["row"]["author"],
            json!({"name": "Ada King", "avatarUrl": "https://avatars.example.com/u-ada.png"}),
            "comments show the fields their embed chose"
        );
        comments.insert(key);
    }
    // Every page Ada wrote, over GraphQL.
    let mut pages = BTreeSet::new();
    while pages != ada_posts {
        let message = next_json(&mut graphql, deadline);
        assert_eq!(message["type"], "next", "{message}");
        let change = &message["payload"]["data"]["postPage"];
        assert_eq!(change["op"], "upsert", "{message}");
        let key = change["key"].as_str().unwrap().to_string();
        assert!(
            ada_posts.contains(&key),
            "only Ada's pages change: {message}"
        );
        assert_eq!(change["row"]["author"]["name"], "Ada King");
        pages.insert(key);
    }
    // Bob's page lists Ada's comments under it; it still shows Bob.
    assert_eq!(
        runtime.get("/v1/postPage/p-bob").unwrap().1["author"]["name"],
        "Bob"
    );
    assert_eq!(
        runtime.metric("facet_embed_rows_rewritten_total"),
        (ada_posts.len() + ada_comments.len()) as f64
    );
}

/// The storefront spec served to anyone: every row readable, for comparison.
fn open_storefront() -> String {
    let spec = sample("storefront");
    let start = spec.find("  auth:\n").unwrap();
    let end = spec.find("  store:\n").unwrap();
    let spec = format!(
        "{}  auth:\n    anonymous: true\n{}",
        &spec[..start],
        &spec[end..]
    );
    spec.lines()
        .filter(|l| !l.trim_start().starts_with("access:"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn rows_by_projection(runtime: &Runtime) -> BTreeMap<&'static str, Vec<Value>> {
    ["order", "customerSummary", "customer"]
        .into_iter()
        .map(|p| (p, runtime.all_rows(p)))
        .collect()
}

#[test]
fn a_replica_replaying_the_topics_equals_the_live_pod_row_for_row() {
    const ORDERS: usize = 1000;
    let logs = log_dir("embeds_kafka_replica");
    let broker = Broker::start(&logs);
    for topic in [
        "shop.orders.v1",
        "shop.payments.v1",
        "shop.customers.v1",
        "shop.commands.v1",
    ] {
        broker.create_topic(topic, 3);
    }
    let work = tempfile::tempdir().unwrap();
    let spec = work.path().join("storefront.yaml");
    std::fs::write(&spec, open_storefront()).unwrap();
    let mut live = Runtime::start(
        &spec,
        &work.path().join("live"),
        &broker.bootstrap(),
        "storefront-web-0",
        &logs.join("live.log"),
    );
    live.wait_ready(Duration::from_secs(60));

    // Payments are captured before the orders service publishes each order, and
    // customers register (and one is renamed) while orders flow: the live pod
    // reads them in whatever order they arrive.
    let producer = broker.producer();
    for i in 0..ORDERS {
        let order = format!("o-{i}");
        let paid = json!({"type": "PaymentCaptured", "orderId": order, "amount": 10.0});
        send(&producer, "shop.payments.v1", &order, paid);
    }
    producer.flush();
    for i in 0..ORDERS {
        let order = format!("o-{i}");
        let customer = format!("c-{}", i % 40);
        if i < 40 {
            let registered = json!({"type": "CustomerRegistered", "customerId": customer,
                "name": format!("Customer {customer}")});
            send(&producer, "shop.customers.v1", &customer, registered);
        }
        let placed = json!({"type": "OrderPlaced", "orderId": order, "customerId": customer,
            "items": [], "total": 10.0, "at": format!("2026-12-01T10:{:02}:{:02}Z", i / 60 % 60, i % 60)});
        send(&producer, "shop.orders.v1", &order, placed);
        if i == ORDERS / 2 {
            let renamed = json!({"type": "CustomerRenamed", "customerId": "c-7", "name": "Seven"});
            send(&producer, "shop.customers.v1", "c-7", renamed);
        }
        if i % 100 == 0 {
            producer.flush();
        }
    }
    producer.flush();
    wait_for(
        "the live pod to read every order",
        Duration::from_secs(60),
        || {
            live.all_rows("order").len() == ORDERS
                && live.all_rows("customer").len() == 40
                && live
                    .get("/v1/customer/c-7")
                    .is_some_and(|(_, row)| row["name"] == "Seven")
        },
    );
    // The live pod may still be applying the last batch; rows settle when the
    // metric of applied events stops at what was produced.
    let produced = (2 * ORDERS + 41) as f64;
    wait_for("every event applied", Duration::from_secs(60), || {
        live.metric("facet_events_applied_total") == produced
    });

    let mut replica = Runtime::start(
        &spec,
        &work.path().join("replica"),
        &broker.bootstrap(),
        "storefront-web-1",
        &logs.join("replica.log"),
    );
    replica.wait_ready(Duration::from_secs(120));
    let live_rows = rows_by_projection(&live);
    let replica_rows = rows_by_projection(&replica);
    let paid = |rows: &[Value]| rows.iter().filter(|r| r["row"]["paid"] == true).count();
    assert_eq!(
        paid(&live_rows["order"]),
        ORDERS,
        "the live pod lost no payment"
    );
    assert_eq!(
        paid(&replica_rows["order"]),
        ORDERS,
        "the replica lost no payment"
    );
    let sevens = live_rows["order"]
        .iter()
        .filter(|r| r["row"]["customer"]["name"] == "Seven")
        .count();
    assert_eq!(sevens, ORDERS / 40, "every order of c-7 shows the new name");
    for (projection, rows) in &live_rows {
        assert_eq!(
            rows.len(),
            replica_rows[projection].len(),
            "{projection}: as many rows"
        );
        for (live_row, replica_row) in rows.iter().zip(&replica_rows[projection]) {
            assert_eq!(live_row, replica_row, "{projection}: row for row");
        }
    }
}
