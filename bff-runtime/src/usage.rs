//! Field usage: which fields of which projection clients are sent, counted the
//! same way on every transport. The unit is one field of one row delivered to a
//! client, in a response or a push: a REST page of 20 rows with `fields=a,b`
//! counts 20 for `a` and 20 for `b`, and so do a GraphQL query selecting `a` and
//! `b` on those rows, a subscription's snapshot of them (every field of the row on
//! the native WebSocket and SSE, which send whole rows), and each pushed row after.
//! Deletes and removes deliver no field.
//!
//! Labels: the projection, the field, the client (the `graphql-client-name`
//! header, else the claim `spec.api.usage.clientClaim` names, else `unknown`)
//! and the GraphQL operation name (empty elsewhere). Clients and operations are
//! bounded per pod: past [`MAX_NAMES`] distinct ones each, new ones count as
//! `other`, so no client can grow the metric without bound.
//!
//! Counting is cheap: a [`Tally`] resolves the counters of a selection's fields
//! once (per request, or per subscription at subscribe), and a delivery only adds
//! to the tally's own count. The shared counters get it when the tally is
//! flushed: at its end, and by a live session a second after the last flush if
//! it delivered anything since (adding to
//! every field's counter on each push made a broadcast to a thousand GraphQL
//! subscribers 40% slower: two cores fought over the same counters).

use std::collections::HashSet;
use std::sync::Arc;

use parking_lot::Mutex;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

/// Most distinct client names, and GraphQL operation names, one pod counts apart.
pub const MAX_NAMES: usize = 100;
/// Longest client or operation name kept; a longer one counts as `other`.
const MAX_NAME_BYTES: usize = 100;
/// The request header naming the client (as GraphQL Hive reads it).
pub const CLIENT_HEADER: &str = "graphql-client-name";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UsageLabel {
    pub projection: String,
    pub field: String,
    pub client: String,
    pub operation: String,
}

/// Who a delivery is for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reader {
    pub client: Arc<str>,
    pub operation: Arc<str>,
}

pub struct FieldUsage {
    pub family: Family<UsageLabel, Counter>,
    clients: Names,
    operations: Names,
}

/// A bounded set of names: those seen first keep their own.
#[derive(Default)]
struct Names(Mutex<HashSet<Arc<str>>>);

impl Names {
    fn bounded(&self, name: &str) -> Arc<str> {
        let mut names = self.0.lock();
        if let Some(known) = names.get(name) {
            return known.clone();
        }
        if names.len() >= MAX_NAMES || name.len() > MAX_NAME_BYTES {
            return Arc::from("other");
        }
        let name: Arc<str> = Arc::from(name);
        names.insert(name.clone());
        name
    }
}

impl FieldUsage {
    pub fn new(family: Family<UsageLabel, Counter>) -> FieldUsage {
        FieldUsage {
            family,
            clients: Names::default(),
            operations: Names::default(),
        }
    }

    /// The reader for a client (if it gave a name) and a GraphQL operation.
    pub fn reader(&self, client: Option<&str>, operation: Option<&str>) -> Reader {
        let client = match client.filter(|c| !c.is_empty()) {
            Some(client) => self.clients.bounded(client),
            None => Arc::from("unknown"),
        };
        let operation = match operation.filter(|o| !o.is_empty()) {
            Some(operation) => self.operations.bounded(operation),
            None => Arc::from(""),
        };
        Reader { client, operation }
    }

    /// The counters of `fields` of `projection` as read by `reader`.
    pub fn tally<'f>(
        &self,
        projection: &str,
        fields: impl IntoIterator<Item = &'f str>,
        reader: &Reader,
    ) -> Tally {
        Tally {
            counters: fields
                .into_iter()
                .map(|field| self.counter(projection, field, reader))
                .collect(),
            pending: 0,
        }
    }

    /// The counters of what a selection of `projection` sends: `fields`, or every
    /// declared field (whole rows).
    pub fn selection_tally(
        &self,
        projection: &crate::spec::CompiledProjection,
        fields: Option<&[String]>,
        reader: &Reader,
    ) -> Tally {
        match fields {
            Some(fields) => self.tally(&projection.name, fields.iter().map(String::as_str), reader),
            None => self.tally(
                &projection.name,
                projection.fields.keys().map(String::as_str),
                reader,
            ),
        }
    }

    /// One field's counter.
    pub fn counter(&self, projection: &str, field: &str, reader: &Reader) -> Counter {
        self.family
            .get_or_create(&UsageLabel {
                projection: projection.to_string(),
                field: field.to_string(),
                client: reader.client.to_string(),
                operation: reader.operation.to_string(),
            })
            .clone()
    }
}

/// The counters of one selection's fields, and the rows delivered with them not
/// yet added to the counters.
#[derive(Default)]
pub struct Tally {
    counters: Vec<Counter>,
    pending: u64,
}

impl Tally {
    /// `rows` rows were delivered with every field of the selection.
    pub fn delivered(&mut self, rows: usize) {
        self.pending += rows as u64;
    }

    /// Whether deliveries wait to be added to the counters.
    pub fn is_pending(&self) -> bool {
        self.pending > 0
    }

    /// Adds what was delivered to the counters.
    pub fn flush(&mut self) {
        if self.pending == 0 {
            return;
        }
        for counter in &self.counters {
            counter.inc_by(self.pending);
        }
        self.pending = 0;
    }
}

impl Drop for Tally {
    fn drop(&mut self) {
        self.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_past_the_bound_count_as_other() {
        let usage = FieldUsage::new(Family::default());
        for n in 0..MAX_NAMES {
            assert_eq!(
                &*usage.reader(Some(&format!("app-{n}")), None).client,
                format!("app-{n}")
            );
        }
        assert_eq!(&*usage.reader(Some("one-too-many"), None).client, "other");
        assert_eq!(
            &*usage.reader(Some("app-7"), None).client,
            "app-7",
            "a known one keeps its name"
        );
        assert_eq!(&*usage.reader(None, None).client, "unknown");
        assert_eq!(
            &*usage.reader(None, Some(&"x".repeat(101))).operation,
            "other"
        );
    }

    #[test]
    fn a_tally_adds_its_rows_to_each_field() {
        let usage = FieldUsage::new(Family::default());
        let reader = usage.reader(Some("web"), Some("Orders"));
        let mut tally = usage.tally("order", ["id", "total"], &reader);
        tally.delivered(20);
        tally.delivered(0);
        let count = |field: &str| usage.counter("order", field, &reader).get();
        assert_eq!(count("id"), 0, "not before a flush");
        tally.flush();
        usage.tally("order", ["id"], &reader).delivered(1);
        assert_eq!(
            (count("id"), count("total")),
            (21, 20),
            "flushed, and at its end"
        );
    }
}
