//! Prometheus metrics of the runtime, served on their own port.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransportLabel {
    pub transport: String,
}

/// Changes handed to clients: the transport and the (declared) projection.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeliveryLabel {
    pub transport: String,
    pub projection: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProjectionLabel {
    pub projection: String,
}

/// A partition of a source topic.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabel {
    pub topic: String,
    pub partition: i32,
}

/// An HTTP request by the route it matched (never the raw path: that would let
/// clients create label values), its method and its status code.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabel {
    pub route: String,
    pub method: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    pub route: String,
}

fn transport_label(transport: &str) -> TransportLabel {
    TransportLabel {
        transport: transport.to_string(),
    }
}

/// One unit of a gauge, held while this value lives: dropping it gives it back,
/// however the connection or stream ends.
pub struct Held(Gauge);

impl Held {
    fn new(gauge: Gauge) -> Self {
        gauge.inc();
        Held(gauge)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.0.dec();
    }
}

pub struct Metrics {
    pub registry: Registry,
    pub events_applied: Counter,
    pub events_rejected: Family<ReasonLabel, Counter>,
    pub batches_committed: Counter,
    pub row_changes: Counter,
    pub embed_rows_rewritten: Counter,
    pub dead_lettered: Counter,
    pub partitions_behind: Gauge,
    pub connections: Family<TransportLabel, Gauge>,
    pub deliveries: Family<TransportLabel, Counter>,
    pub delivery_latency: Family<DeliveryLabel, Histogram>,
    pub commit_freshness: Family<ProjectionLabel, Histogram>,
    pub consumer_lag: Family<PartitionLabel, Gauge>,
    pub subscriptions: Family<TransportLabel, Gauge>,
    /// Fields delivered to clients (see [`crate::usage`]).
    pub usage: crate::usage::FieldUsage,
    pub slow_client_disconnects: Counter,
    pub auth_failures: Family<ReasonLabel, Counter>,
    pub graphql_planned: Counter,
    pub http_requests: Family<RequestLabel, Counter>,
    pub http_duration: Family<RouteLabel, Histogram>,
    pub peer_images: Family<OutcomeLabel, Counter>,
    pub commands: Family<CommandLabel, Counter>,
}

/// A command by name (declared in the spec, so a bounded set) and what came of it.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CommandLabel {
    pub command: String,
    pub outcome: String,
}

/// What came of asking a peer for its store image (see [`crate::peer::Outcome`]).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: String,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Every metric, registered with its help text.
    ///
    /// Long on purpose: one registration per metric, in the order `/metrics`
    /// lists them, so the list reads as the catalogue it is.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("facet");
        let events_applied = Counter::default();
        registry.register(
            "events_applied",
            "Events applied to the projections",
            events_applied.clone(),
        );
        let events_rejected = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "events_rejected",
            "Events skipped because they could not be applied, by reason",
            events_rejected.clone(),
        );
        let batches_committed = Counter::default();
        registry.register(
            "store_batches_committed",
            "Store transactions committed",
            batches_committed.clone(),
        );
        let row_changes = Counter::default();
        registry.register("row_changes", "Row changes committed", row_changes.clone());
        let embed_rows_rewritten = Counter::default();
        registry.register(
            "embed_rows_rewritten",
            "Rows rewritten because a row they embed changed (bounded per change by maxFanOut; events over it are rejected with reason fan_out)",
            embed_rows_rewritten.clone(),
        );
        let dead_lettered = Counter::default();
        registry.register(
            "events_dead_lettered",
            "Rejected events sent to the dead-letter topic",
            dead_lettered.clone(),
        );
        let partitions_behind = Gauge::default();
        registry.register(
            "partitions_behind_start",
            "Partitions not yet caught up with the high watermark they had at start",
            partitions_behind.clone(),
        );
        let connections = Family::<TransportLabel, Gauge>::default();
        registry.register(
            "connections",
            "Open streaming connections, by transport",
            connections.clone(),
        );
        let deliveries = Family::<TransportLabel, Counter>::default();
        registry.register(
            "deliveries",
            "Changes handed to a client's connection for sending, by transport",
            deliveries.clone(),
        );
        let delivery_latency = Family::<DeliveryLabel, Histogram>::new_with_constructor(
            (|| Histogram::new(exponential_buckets(0.001, 2.0, 16))) as fn() -> Histogram,
        );
        registry.register(
            "delivery_latency_seconds",
            "From an event's Kafka timestamp to its change being handed to a client's connection, \
             by transport and projection: how fresh what clients see is",
            delivery_latency.clone(),
        );
        let commit_freshness = Family::<ProjectionLabel, Histogram>::new_with_constructor(
            (|| Histogram::new(exponential_buckets(0.001, 2.0, 16))) as fn() -> Histogram,
        );
        registry.register(
            "commit_freshness_seconds",
            "From an event's Kafka timestamp to the commit of the row changes it made, by \
             projection (batches read live; a replay's are as old as its history)",
            commit_freshness.clone(),
        );
        let consumer_lag = Family::<PartitionLabel, Gauge>::default();
        registry.register(
            "consumer_lag",
            "Records a source partition has past what the store committed, from the high \
             watermark the consumer last fetched (updated after each batch, and after each poll \
             that finds nothing)",
            consumer_lag.clone(),
        );
        let subscriptions = Family::<TransportLabel, Gauge>::default();
        registry.register(
            "subscriptions",
            "Open subscriptions, by transport",
            subscriptions.clone(),
        );
        let field_usage = Family::<crate::usage::UsageLabel, Counter>::default();
        registry.register(
            "field_reads",
            "Fields of rows delivered to clients on any API, one per row and field, by projection, \
             client and GraphQL operation (what no one reads can be deprecated)",
            field_usage.clone(),
        );
        let slow_client_disconnects = Counter::default();
        registry.register(
            "slow_client_disconnects",
            "Clients disconnected because they fell too far behind",
            slow_client_disconnects.clone(),
        );
        let auth_failures = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "auth_failures",
            "Refused tokens, by reason",
            auth_failures.clone(),
        );
        let graphql_planned = Counter::default();
        registry.register(
            "graphql_planned_subscriptions",
            "GraphQL subscriptions the live core answers itself, one encoding per change for all alike (the rest go through the GraphQL executor per client)",
            graphql_planned.clone(),
        );
        let http_requests = Family::<RequestLabel, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by route, method and status (streams count when they start)",
            http_requests.clone(),
        );
        let http_duration = Family::<RouteLabel, Histogram>::new_with_constructor(
            (|| Histogram::new(exponential_buckets(0.0005, 2.0, 16))) as fn() -> Histogram,
        );
        registry.register(
            "http_request_duration_seconds",
            "Time to answer an HTTP request's head, by route",
            http_duration.clone(),
        );
        let peer_images = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "peer_images",
            "Attempts to copy the store from a peer at start, by outcome (copied; otherwise why not, and the topics were replayed unless a later peer gave its image)",
            peer_images.clone(),
        );
        let commands = Family::<CommandLabel, Counter>::default();
        registry.register(
            "commands",
            "Commands by name and outcome: accepted, visible, or the refusal's code",
            commands.clone(),
        );
        Metrics {
            registry,
            events_applied,
            events_rejected,
            batches_committed,
            row_changes,
            embed_rows_rewritten,
            dead_lettered,
            partitions_behind,
            connections,
            deliveries,
            delivery_latency,
            commit_freshness,
            consumer_lag,
            subscriptions,
            usage: crate::usage::FieldUsage::new(field_usage),
            slow_client_disconnects,
            auth_failures,
            graphql_planned,
            http_requests,
            http_duration,
            peer_images,
            commands,
        }
    }

    pub fn command(&self, command: &str, outcome: &str) {
        self.commands
            .get_or_create(&CommandLabel {
                command: command.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
    }

    pub fn peer_image(&self, outcome: crate::peer::Outcome) {
        self.peer_images
            .get_or_create(&OutcomeLabel {
                outcome: outcome.label().to_string(),
            })
            .inc();
    }

    pub fn reject(&self, reason: &str) {
        self.events_rejected
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .inc();
    }

    /// One open streaming connection of `transport`, counted while the value lives.
    pub fn connection(&self, transport: &str) -> Held {
        Held::new(
            self.connections
                .get_or_create(&transport_label(transport))
                .clone(),
        )
    }

    /// The gauge of `transport`'s live subscriptions (a session keeps it).
    pub fn subscriptions_of(&self, transport: &str) -> Gauge {
        self.subscriptions
            .get_or_create(&transport_label(transport))
            .clone()
    }

    /// The counter of `transport`'s deliveries (a session keeps it).
    pub fn deliveries_of(&self, transport: &str) -> Counter {
        self.deliveries
            .get_or_create(&transport_label(transport))
            .clone()
    }

    /// The freshness of what `transport` hands clients of `projection` (a
    /// subscription keeps it).
    pub fn delivery_latency_of(&self, transport: &str, projection: &str) -> Histogram {
        self.delivery_latency
            .get_or_create(&DeliveryLabel {
                transport: transport.to_string(),
                projection: projection.to_string(),
            })
            .clone()
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
