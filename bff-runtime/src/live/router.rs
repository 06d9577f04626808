//! The live feed: every committed change goes to the subscriptions that see it (or
//! saw the row before), and to no others.
//!
//! Subscriptions are filed by a value every row they see must have (their key, a
//! `where` equality, or what the access rule compares, such as `customerId` for
//! `row.customerId == auth.sub`). A change looks up its row's and its previous row's
//! values, so the work per change follows the clients that should receive it, not
//! all clients; only subscriptions with nothing to file them by are checked on
//! every change of their projection.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;

use super::change::{LiveChange, Op};
use super::outbox::{Delivery, Outbox};
use super::selector::{RouteKey, Selector};
use crate::store::{index_value, Change};

struct Route {
    id: u64,
    sub: u32,
    delta: bool,
    selector: Arc<Selector>,
    outbox: Arc<Outbox>,
}

#[derive(Default)]
struct Routes {
    by_key: HashMap<String, Vec<Route>>,
    /// field → value → routes.
    by_field: HashMap<String, HashMap<String, Vec<Route>>>,
    scan: Vec<Route>,
}

impl Routes {
    fn bucket(&mut self, key: &RouteKey) -> &mut Vec<Route> {
        match key {
            RouteKey::Key(k) => self.by_key.entry(k.clone()).or_default(),
            RouteKey::Field(f, v) => self
                .by_field
                .entry(f.clone())
                .or_default()
                .entry(v.clone())
                .or_default(),
            RouteKey::Scan => &mut self.scan,
        }
    }

    fn remove(&mut self, key: &RouteKey, id: u64) {
        let bucket = self.bucket(key);
        bucket.retain(|r| r.id != id);
        if bucket.is_empty() {
            match key {
                RouteKey::Key(k) => {
                    self.by_key.remove(k);
                }
                RouteKey::Field(f, v) => {
                    if let Some(values) = self.by_field.get_mut(f) {
                        values.remove(v);
                        if values.is_empty() {
                            self.by_field.remove(f);
                        }
                    }
                }
                RouteKey::Scan => self.scan = Vec::new(),
            }
        }
    }
}

#[derive(Default)]
struct Registry {
    projections: HashMap<String, Routes>,
    next_id: u64,
}

/// The in-process change feed. Cloning shares it.
#[derive(Clone, Default)]
pub struct Router {
    registry: Arc<RwLock<Registry>>,
}

/// A subscription's place in the router; dropping it removes the subscription.
pub struct Registration {
    router: Router,
    projection: String,
    key: RouteKey,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut registry = self.router.registry.write();
        if let Some(routes) = registry.projections.get_mut(&self.projection) {
            routes.remove(&self.key, self.id);
        }
    }
}

impl Router {
    pub fn new() -> Self {
        Router::default()
    }

    /// From now on, changes `selector` sees go to `outbox` as subscription `sub`.
    pub fn register(
        &self,
        selector: Arc<Selector>,
        delta: bool,
        outbox: Arc<Outbox>,
        sub: u32,
    ) -> Registration {
        let projection = selector.projection().name.clone();
        let key = selector.route_key();
        let mut registry = self.registry.write();
        registry.next_id += 1;
        let id = registry.next_id;
        registry
            .projections
            .entry(projection.clone())
            .or_default()
            .bucket(&key)
            .push(Route {
                id,
                sub,
                delta,
                selector,
                outbox,
            });
        Registration {
            router: self.clone(),
            projection,
            key,
            id,
        }
    }

    /// Routes changes the store has committed, in commit order.
    pub fn publish(&self, changes: Vec<Change>) {
        let registry = self.registry.read();
        for change in changes {
            let Some(routes) = registry.projections.get(&change.projection) else {
                continue;
            };
            let change = Arc::new(LiveChange::committed(change));
            let deliver = |route: &Route| {
                if let Some(op) = op_for(&route.selector, route.delta, &change) {
                    route.outbox.push(Delivery {
                        sub: route.sub,
                        op,
                        change: change.clone(),
                    });
                }
            };
            if let Some(bucket) = routes.by_key.get(&change.key) {
                bucket.iter().for_each(deliver);
            }
            for (field, values) in &routes.by_field {
                let now = change
                    .row
                    .as_ref()
                    .and_then(|r| r.get(field))
                    .and_then(index_value);
                let before = change
                    .previous
                    .as_ref()
                    .and_then(|r| r.get(field))
                    .and_then(index_value);
                if let Some(bucket) = now.as_ref().and_then(|v| values.get(v)) {
                    bucket.iter().for_each(deliver);
                }
                if before != now {
                    if let Some(bucket) = before.as_ref().and_then(|v| values.get(v)) {
                        bucket.iter().for_each(deliver);
                    }
                }
            }
            routes.scan.iter().for_each(deliver);
        }
    }

    /// Subscriptions registered, for tests and metrics.
    pub fn len(&self) -> usize {
        let registry = self.registry.read();
        registry
            .projections
            .values()
            .map(|r| {
                r.scan.len()
                    + r.by_key.values().map(Vec::len).sum::<usize>()
                    + r.by_field
                        .values()
                        .flat_map(|v| v.values())
                        .map(Vec::len)
                        .sum::<usize>()
            })
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a change means for a subscription: judged from the row before and after,
/// so nothing per client has to remember which rows it was sent.
pub fn op_for(selector: &Selector, delta: bool, change: &LiveChange) -> Option<Op> {
    let now = change
        .row
        .as_ref()
        .is_some_and(|r| selector.sees(&change.key, r));
    let before = change
        .previous
        .as_ref()
        .is_some_and(|r| selector.sees(&change.key, r));
    match (now, before) {
        (true, true) if delta => Some(Op::Patch),
        (true, _) => Some(Op::Upsert),
        (false, true) if change.row.is_none() => Some(Op::Delete),
        (false, true) => Some(Op::Remove),
        (false, false) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression (issue 24): with std's locks, a panic while the registry was
    /// held poisoned it, and every later publish and subscription panicked too.
    #[test]
    fn a_panic_while_holding_the_registry_leaves_the_router_working() {
        let router = Router::default();
        let holder = router.clone();
        let panicked = std::thread::spawn(move || {
            let _held = holder.registry.write();
            panic!("while holding the router");
        })
        .join();
        assert!(panicked.is_err());
        router.publish(vec![change("o-1", "alice", None)]);
        assert_eq!(router.len(), 0);
    }
    use crate::live::selector::Selection;
    use crate::projection::RowOp;
    use crate::spec::{compile, CompiledExperience};
    use crate::store::Source;
    use crate::viewer::Viewer;

    fn storefront(access: &str) -> Arc<CompiledExperience> {
        let mut spec = crate::spec::sample("storefront");
        spec.projections[0].access = Some(access.to_string());
        Arc::new(compile(&spec).unwrap())
    }

    fn change(key: &str, customer: &str, previous: Option<&str>) -> Change {
        let row = |c: &str| {
            serde_json::json!({"id": key, "customerId": c})
                .as_object()
                .unwrap()
                .clone()
        };
        Change {
            seq: 1,
            projection: "order".into(),
            key: key.into(),
            op: RowOp::Upsert(row(customer)),
            previous: previous.map(row),
            source: Source {
                topic: "shop.orders.v1".into(),
                partition: 0,
                offset: 0,
            },
            position: String::new(),
            event_time_ms: None,
        }
    }

    /// One subscription per user, plus the console; returns each one's outbox.
    fn subscribe_all(
        router: &Router,
        experience: &Arc<CompiledExperience>,
        users: usize,
    ) -> (Vec<Registration>, Vec<Arc<Outbox>>) {
        let selection = Selection {
            projection: "order".into(),
            ..Selection::default()
        };
        let mut registrations = Vec::new();
        let mut outboxes = Vec::new();
        let viewers = (0..users)
            .map(|u| Viewer::Claims(serde_json::json!({ "sub": format!("u-{u}") })))
            .chain([Viewer::Console]);
        for (n, viewer) in viewers.enumerate() {
            let outbox = Outbox::new(10);
            let selector = Arc::new(Selector::new(experience, &selection, &viewer).unwrap());
            registrations.push(router.register(selector, false, outbox.clone(), n as u32));
            outboxes.push(outbox);
        }
        (registrations, outboxes)
    }

    fn received(outboxes: &[Arc<Outbox>]) -> Vec<(usize, &'static str)> {
        outboxes
            .iter()
            .enumerate()
            .flat_map(|(n, o)| o.take().0.into_iter().map(move |d| (n, d.op.as_str())))
            .collect()
    }

    #[test]
    fn a_change_reaches_only_who_sees_it_now_or_saw_it_before() {
        for access in [
            "row.customerId == auth.sub",
            "row.customerId == auth.sub && auth.sub != \"\"",
        ] {
            let experience = storefront(access);
            let router = Router::new();
            let (registrations, outboxes) = subscribe_all(&router, &experience, 1000);
            assert_eq!(router.len(), 1001);
            router.publish(vec![change("o-1", "u-5", None)]);
            assert_eq!(
                received(&outboxes),
                [(5, "upsert"), (1000, "upsert")],
                "{access}"
            );
            router.publish(vec![change("o-1", "u-7", Some("u-5"))]);
            assert_eq!(
                received(&outboxes),
                [(5, "remove"), (7, "upsert"), (1000, "upsert")],
                "{access}"
            );
            drop(registrations);
            assert!(router.is_empty(), "dropping a registration removes it");
        }
    }

    #[test]
    fn rules_without_equalities_are_checked_against_every_change() {
        let experience = storefront("row.customerId == auth.sub || auth.sub == \"admin\"");
        let router = Router::new();
        let (_registrations, outboxes) = subscribe_all(&router, &experience, 3);
        router.publish(vec![change("o-1", "u-2", None)]);
        assert_eq!(received(&outboxes), [(2, "upsert"), (3, "upsert")]);
    }
}
