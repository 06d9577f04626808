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
use std::sync::{Arc, RwLock};

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
        let mut registry = self.router.registry.write().expect("router lock");
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
        let mut registry = self.registry.write().expect("router lock");
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
        let registry = self.registry.read().expect("router lock");
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
                let now = change.row.as_ref().and_then(|r| r.get(field)).and_then(index_value);
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
        let registry = self.registry.read().expect("router lock");
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
