//! The storefront sample's events at volume, for the replay bench and the tests
//! that need a store whose replay takes a while.

use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

pub const ORDERS: &str = "shop.orders.v1";
pub const PAYMENTS: &str = "shop.payments.v1";
pub const CUSTOMERS: &str = "shop.customers.v1";
pub const PARTITIONS: i32 = 3;
const CUSTOMER_COUNT: usize = 5_000;

/// The storefront sample, anonymous (no identity provider needed), with or without
/// the order's embed of its customer.
pub fn storefront(embeds: bool) -> String {
    let text =
        std::fs::read_to_string(crate::repo_root().join("config/samples/storefront.yaml")).unwrap();
    let mut manifest: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let spec = &mut manifest["spec"];
    spec["auth"] = serde_yaml::from_str("{anonymous: true}").unwrap();
    if let serde_yaml::Value::Mapping(kafka) = &mut spec["kafka"] {
        kafka.remove("deadLetterTopic");
    }
    if !embeds {
        if let serde_yaml::Value::Mapping(order) = &mut spec["projections"][0] {
            order.remove("embeds");
        }
    }
    serde_yaml::to_string(&manifest).unwrap()
}

/// Customers, then orders of three events each (placed, payment captured, shipped)
/// on three topics, `events` records in all. Returns how many were produced.
pub fn produce(bootstrap: &str, events: usize) -> usize {
    produce_orders(bootstrap, events, 3)
}

/// Customers, then orders of their first `steps` events (1: placed only, a row
/// per record), `events` records in all. Returns how many were produced.
pub fn produce_orders(bootstrap: &str, events: usize, steps: usize) -> usize {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "20")
        .set("batch.size", "1000000")
        .set("queue.buffering.max.messages", "1000000")
        .set("compression.type", "lz4")
        .create()
        .expect("producer");
    let send = |topic: &str, key: &str, value: serde_json::Value| {
        let value = value.to_string();
        let mut record = BaseRecord::<str, str>::to(topic).key(key).payload(&value);
        loop {
            match producer.send(record) {
                Ok(()) => return,
                Err((_, r)) => {
                    record = r;
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        }
    };
    let customers = CUSTOMER_COUNT.min(events);
    for i in 0..customers {
        let customer = format!("c-{i}");
        send(
            CUSTOMERS,
            &customer,
            serde_json::json!({"type": "CustomerRegistered", "customerId": customer, "name": format!("Customer {i}")}),
        );
    }
    let mut produced = customers;
    let mut order = 0;
    while produced < events {
        let id = format!("o-{order}");
        let customer = format!("c-{}", order % CUSTOMER_COUNT);
        let at = format!("2026-11-{:02}T{:02}:00:00Z", 1 + order % 28, order % 24);
        let kinds = [
            (
                ORDERS,
                serde_json::json!({"type": "OrderPlaced", "orderId": id, "customerId": customer,
                "items": [{"sku": "mug-01", "name": "Mug", "quantity": 1, "price": 12.5}], "total": 12.5, "at": at}),
            ),
            (
                PAYMENTS,
                serde_json::json!({"type": "PaymentCaptured", "orderId": id, "amount": 12.5}),
            ),
            (
                ORDERS,
                serde_json::json!({"type": "OrderShipped", "orderId": id, "carrier": "DHL", "at": at}),
            ),
        ];
        for (topic, value) in kinds.into_iter().take(steps.min(events - produced)) {
            send(topic, &id, value);
            produced += 1;
        }
        order += 1;
    }
    producer.flush(Duration::from_secs(300)).expect("flush");
    produced
}
