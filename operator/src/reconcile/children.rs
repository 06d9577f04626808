//! The experiences' children as the operator's own watches last saw them.
//! Reconciles read what exists here instead of listing it from the API server
//! each time, so a settled experience's periodic reconcile lists nothing; the
//! same watches wake the controller when a child changes, and a watch updates
//! its cache before it wakes anyone, so a reconcile never reads a child older
//! than the change that woke it.

use std::fmt::Debug;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::PartialObjectMeta;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

/// The label every child carries.
const MANAGED: &str = "app.kubernetes.io/managed-by=facet-operator";

/// One cache per kind. StatefulSets and Services whole (a reconcile reads their
/// specs and statuses); the rest as metadata only (what the sweep needs).
#[derive(Clone)]
pub struct Children {
    pub stateful_sets: Store<StatefulSet>,
    pub services: Store<Service>,
    pub config_maps: Store<PartialObjectMeta<ConfigMap>>,
    pub budgets: Store<PartialObjectMeta<PodDisruptionBudget>>,
    pub policies: Store<PartialObjectMeta<NetworkPolicy>>,
    /// Set once every cache has listed. Reconciles wait on this, never on the
    /// stores themselves: a store's readiness wakes only the last task that
    /// polled it (kube-runtime 5's `DelayedInit` keeps one waker), so
    /// reconciles waiting side by side at start could wait forever.
    listed: Arc<tokio::sync::OnceCell<()>>,
}

/// A cache's watch events, to drive the cache and trigger the controller.
pub type Triggers<K> = std::pin::Pin<Box<dyn Stream<Item = Result<K, watcher::Error>> + Send>>;

/// The watches that fill [`Children`], one per kind, to hand to the controller.
pub struct Watches {
    pub stateful_sets: Triggers<StatefulSet>,
    pub services: Triggers<Service>,
    pub config_maps: Triggers<PartialObjectMeta<ConfigMap>>,
    pub budgets: Triggers<PartialObjectMeta<PodDisruptionBudget>>,
    pub policies: Triggers<PartialObjectMeta<NetworkPolicy>>,
    /// The experiences' pods (metadata only, not cached): a pod that starts running
    /// or changes its readiness wakes its experience, whose status asks it why.
    pub pods: Triggers<PartialObjectMeta<Pod>>,
}

impl Children {
    /// Caches of the children in one namespace (or all of them), and the watches
    /// that fill them; the caches fill only while those are polled.
    pub fn watch(client: &Client, namespace: Option<&str>) -> (Children, Watches) {
        // An `Api` of `PartialObjectMeta` asks for metadata only.
        let (stateful_sets, sts_watch) = cache(scoped(client, namespace));
        let (services, svc_watch) = cache(scoped(client, namespace));
        let (config_maps, cm_watch) = cache(scoped(client, namespace));
        let (budgets, pdb_watch) = cache(scoped(client, namespace));
        let (policies, np_watch) = cache(scoped(client, namespace));
        let children = Children::new(stateful_sets, services, config_maps, budgets, policies);
        let watches = Watches {
            stateful_sets: sts_watch,
            services: svc_watch,
            config_maps: cm_watch,
            budgets: pdb_watch,
            policies: np_watch,
            pods: watcher(
                scoped(client, namespace),
                watcher::Config::default().labels(MANAGED),
            )
            .default_backoff()
            .touched_objects()
            .boxed(),
        };
        (children, watches)
    }

    /// The caches, filled by whoever holds their writers.
    pub fn new(
        stateful_sets: Store<StatefulSet>,
        services: Store<Service>,
        config_maps: Store<PartialObjectMeta<ConfigMap>>,
        budgets: Store<PartialObjectMeta<PodDisruptionBudget>>,
        policies: Store<PartialObjectMeta<NetworkPolicy>>,
    ) -> Children {
        Children {
            stateful_sets,
            services,
            config_maps,
            budgets,
            policies,
            listed: Arc::default(),
        }
    }

    /// Waits until every cache has listed what exists once (at start only): an
    /// empty cache would read as an experience without children.
    pub async fn ready(&self) {
        // One task at a time polls the stores (see `listed`); the others wait
        // on the cell, which wakes them all.
        self.listed
            .get_or_init(|| async {
                // An error means the watch is gone, which stops the controller anyway.
                let _ = futures::join!(
                    self.stateful_sets.wait_until_ready(),
                    self.services.wait_until_ready(),
                    self.config_maps.wait_until_ready(),
                    self.budgets.wait_until_ready(),
                    self.policies.wait_until_ready(),
                );
            })
            .await;
    }
}

/// The children of experience `name` in `namespace` in one cache, by name.
pub fn of<K>(store: &Store<K>, namespace: &str, name: &str) -> Vec<Arc<K>>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    let mut found: Vec<Arc<K>> = store
        .state()
        .into_iter()
        .filter(|o| {
            o.namespace().as_deref() == Some(namespace)
                && o.labels()
                    .get(super::builders::INSTANCE_LABEL)
                    .map(String::as_str)
                    == Some(name)
        })
        .collect();
    found.sort_by_key(|o| o.name_any());
    found
}

/// One child by name, if the cache has it.
pub fn named<K>(store: &Store<K>, namespace: &str, name: &str) -> Option<Arc<K>>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    store.get(&reflector::ObjectRef::new(name).within(namespace))
}

/// An API for one namespace, or for all of them.
pub fn scoped<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

fn cache<K>(api: Api<K>) -> (Store<K>, Triggers<K>)
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Send + Sync + 'static,
{
    let (reader, writer) = reflector::store();
    let events = watcher(api, watcher::Config::default().labels(MANAGED))
        .default_backoff()
        // Who changed which field is not read, and is most of an object's size.
        .modify(|object| object.managed_fields_mut().clear());
    (
        reader,
        reflector::reflector(writer, events)
            .touched_objects()
            .boxed(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: at start every experience's reconcile waits for the caches at
    /// once; with the stores' own readiness only the last of them woke, and the
    /// others (in the e2e, the one to be rebuilt next) never reconciled again.
    #[tokio::test]
    async fn every_reconcile_waiting_at_start_wakes_when_the_caches_have_listed() {
        let (stateful_sets, mut sts) = reflector::store();
        let (services, mut svc) = reflector::store();
        let (config_maps, mut cm) = reflector::store();
        let (budgets, mut pdb) = reflector::store();
        let (policies, mut np) = reflector::store();
        let children = Children::new(stateful_sets, services, config_maps, budgets, policies);
        let waiting: Vec<_> = (0..3)
            .map(|_| {
                let children = children.clone();
                tokio::spawn(async move { children.ready().await })
            })
            .collect();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        sts.apply_watcher_event(&watcher::Event::InitDone);
        svc.apply_watcher_event(&watcher::Event::InitDone);
        cm.apply_watcher_event(&watcher::Event::InitDone);
        pdb.apply_watcher_event(&watcher::Event::InitDone);
        np.apply_watcher_event(&watcher::Event::InitDone);
        for task in waiting {
            tokio::time::timeout(std::time::Duration::from_secs(5), task)
                .await
                .expect("a reconcile waiting at start was never woken")
                .unwrap();
        }
    }
}
