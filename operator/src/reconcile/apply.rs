//! The apply phase: every desired child is server-side applied under one field
//! manager, then every child this operator made for the experience that is no
//! longer desired is deleted (the orphan sweep), so what runs is exactly what the
//! builders return, whatever an earlier version of the spec or the operator made.

use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, PartialObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::builders::{config_map_name, peer_token_secret, BuildError, Desired};
use super::children::{self as cached, Children};
use super::error::Error;
use crate::api::FrontendExperience;

pub const FIELD_MANAGER: &str = "facet-operator";

/// Applies `desired` for `fx` and sweeps what is no longer in it.
///
/// What exists is listed first (metadata only), so that a child whose desired
/// state and version are what they were after this operator last applied it is
/// not applied again (see [`Applied`]), and the same lists serve the sweep.
pub async fn apply_all(
    client: &Client,
    fx: &FrontendExperience,
    desired: &Desired,
    applied: &Applied,
    children: &Children,
) -> Result<(), Error> {
    let namespace = &fx.namespace().ok_or(BuildError::Missing("namespace"))?;
    let owner = fx.uid().ok_or(BuildError::Missing("uid"))?;
    if !applied.has_token(&owner) {
        ensure_peer_token(Api::namespaced(client.clone(), namespace), fx).await?;
        applied.token_made(&owner);
    }
    let name = fx.name_any();
    let listed = Listed {
        config_maps: cached::of(&children.config_maps, namespace, &name),
        services: metadata_of(cached::of(&children.services, namespace, &name)),
        stateful_sets: metadata_of(cached::of(&children.stateful_sets, namespace, &name)),
        budgets: cached::of(&children.budgets, namespace, &name),
        policies: cached::of(&children.policies, namespace, &name),
    };
    let child = Child {
        client,
        namespace,
        owner: &owner,
        applied,
    };
    child
        .apply(&desired.config_map, &listed.config_maps)
        .await?;
    child.apply(&desired.service, &listed.services).await?;
    child
        .apply(&desired.headless_service, &listed.services)
        .await?;
    child
        .apply(&desired.stateful_set, &listed.stateful_sets)
        .await?;
    if let Some((set, replicas)) = &desired.resize_kept {
        // Only the replicas: the rest of the kept set stays as its definition made it.
        let scale = serde_json::json!({"spec": {"replicas": replicas}});
        Api::<StatefulSet>::namespaced(client.clone(), namespace)
            .patch(set, &PatchParams::default(), &Patch::Merge(&scale))
            .await
            .map_err(|source| Error::Apply {
                kind: "StatefulSet",
                name: set.clone(),
                source,
            })?;
    }
    if let Some(budget) = &desired.pod_disruption_budget {
        child.apply(budget, &listed.budgets).await?;
    }
    if let Some(policy) = &desired.network_policy {
        child.apply(policy, &listed.policies).await?;
    }

    // The set that serves while the current definition rebuilds stays as it is.
    let kept_set = desired.keep.iter().cloned();
    let kept_config_map = desired.keep.iter().map(|set| config_map_name(set));
    let config_maps: Vec<String> = std::iter::once(desired.config_map.name_any())
        .chain(kept_config_map)
        .collect();
    child.sweep(&listed.config_maps, &config_maps).await?;
    let services = [
        desired.service.name_any(),
        desired.headless_service.name_any(),
    ];
    child.sweep(&listed.services, &services).await?;
    let statefulsets: Vec<String> = std::iter::once(desired.stateful_set.name_any())
        .chain(kept_set)
        .collect();
    child.sweep(&listed.stateful_sets, &statefulsets).await?;
    let budgets: Vec<String> = desired
        .pod_disruption_budget
        .iter()
        .map(|b| b.name_any())
        .collect();
    child.sweep(&listed.budgets, &budgets).await?;
    let policies: Vec<String> = desired
        .network_policy
        .iter()
        .map(|p| p.name_any())
        .collect();
    child.sweep(&listed.policies, &policies).await?;
    Ok(())
}

/// The children that carry the experience's labels, as the caches had them
/// before applying (metadata only: versions, owners).
struct Listed {
    config_maps: Vec<Arc<PartialObjectMeta<ConfigMap>>>,
    services: Vec<Arc<PartialObjectMeta<Service>>>,
    stateful_sets: Vec<Arc<PartialObjectMeta<StatefulSet>>>,
    budgets: Vec<Arc<PartialObjectMeta<PodDisruptionBudget>>>,
    policies: Vec<Arc<PartialObjectMeta<NetworkPolicy>>>,
}

/// Whole cached objects as their metadata.
fn metadata_of<K: Resource + Clone>(objects: Vec<Arc<K>>) -> Vec<Arc<PartialObjectMeta<K>>> {
    objects
        .into_iter()
        .map(|object| {
            Arc::new(PartialObjectMeta {
                types: None,
                metadata: object.meta().clone(),
                _phantom: Default::default(),
            })
        })
        .collect()
}

/// What this operator last applied to each child and the version the API server
/// gave the child then. A child is applied again only when what is desired
/// changed, or the child did (edited, deleted, made anew): an experience that
/// has settled costs its periodic reconcile no write at all. A StatefulSet's or
/// budget's version is its generation (their status moves their resourceVersion
/// all the time); labels edited by hand on a StatefulSet therefore come back only
/// with the next change of its spec or of the experience, or a restart.
#[derive(Default)]
pub struct Applied {
    children: Mutex<HashMap<ChildKey, (u64, Option<String>)>>,
    tokens: Mutex<HashSet<String>>,
}

/// (owner uid, kind, name).
type ChildKey = (String, &'static str, String);

impl Applied {
    fn unchanged(&self, key: &ChildKey, desired: u64, version: Option<String>) -> bool {
        let children = self.children.lock().unwrap_or_else(|e| e.into_inner());
        version.is_some() && children.get(key) == Some(&(desired, version))
    }

    fn record(&self, key: ChildKey, desired: u64, version: Option<String>) {
        let mut children = self.children.lock().unwrap_or_else(|e| e.into_inner());
        children.insert(key, (desired, version));
    }

    fn has_token(&self, owner: &str) -> bool {
        let tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        tokens.contains(owner)
    }

    fn token_made(&self, owner: &str) {
        let mut tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        tokens.insert(owner.to_string());
    }

    /// Forgets a deleted experience.
    pub fn forget(&self, owner: &str) {
        let mut children = self.children.lock().unwrap_or_else(|e| e.into_inner());
        children.retain(|(uid, _, _), _| uid != owner);
        let mut tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        tokens.remove(owner);
    }
}

/// The version of a child that says whether its spec moved (see [`Applied`]).
fn version_of<K: k8s_openapi::Resource>(meta: &ObjectMeta) -> Option<String> {
    match K::KIND {
        "StatefulSet" | "PodDisruptionBudget" => meta.generation.map(|g| format!("g{g}")),
        _ => meta.resource_version.clone(),
    }
}

/// A hash of what is desired of a child, to tell whether it changed since.
fn desired_hash<K: Serialize>(object: &K) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_vec(object)
        .unwrap_or_default()
        .hash(&mut hasher);
    hasher.finish()
}

/// Creates the peer token Secret if there is none; one that exists is left as it
/// is (its token is random, so applying it anew would change it).
async fn ensure_peer_token(api: Api<Secret>, fx: &FrontendExperience) -> Result<(), Error> {
    let secret = peer_token_secret(fx, &random_token())?;
    match api.create(&PostParams::default(), &secret).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(source) => Err(Error::Apply {
            kind: "Secret",
            name: secret.name_any(),
            source,
        }),
    }
}

/// 32 random bytes, as hex.
fn random_token() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the operating system's random source");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Applies and sweeps the children of one experience.
struct Child<'a> {
    client: &'a Client,
    namespace: &'a str,
    /// The experience's uid: only what it owns is swept.
    owner: &'a str,
    applied: &'a Applied,
}

impl Child<'_> {
    /// Server-side apply under the operator's field manager (it owns what it
    /// sets), unless the child is as this operator last applied it.
    async fn apply<K>(&self, object: &K, listed: &[Arc<PartialObjectMeta<K>>]) -> Result<(), Error>
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + k8s_openapi::Resource
            + Clone
            + Debug
            + Serialize
            + DeserializeOwned,
    {
        let name = object.name_any();
        let key = (self.owner.to_string(), K::KIND, name.clone());
        let desired = desired_hash(object);
        let now = listed
            .iter()
            .find(|o| o.metadata.name.as_deref() == Some(name.as_str()))
            .and_then(|o| version_of::<K>(&o.metadata));
        if self.applied.unchanged(&key, desired, now) {
            return Ok(());
        }
        let api: Api<K> = Api::namespaced(self.client.clone(), self.namespace);
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let made = api
            .patch(&name, &params, &Patch::Apply(object))
            .await
            .map_err(|source| Error::Apply {
                kind: K::KIND,
                name,
                source,
            })?;
        self.applied
            .record(key, desired, version_of::<K>(made.meta()));
        Ok(())
    }

    /// Deletes the listed objects owned by the experience that are not in `keep`.
    async fn sweep<K>(
        &self,
        listed: &[Arc<PartialObjectMeta<K>>],
        keep: &[String],
    ) -> Result<(), Error>
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + k8s_openapi::Resource
            + Clone
            + Debug
            + DeserializeOwned,
    {
        let api: Api<K> = Api::namespaced(self.client.clone(), self.namespace);
        for object in listed {
            let name = object.name_any();
            let ours = object
                .metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| o.uid == self.owner);
            if keep.contains(&name) || !ours {
                continue;
            }
            match api.delete(&name, &DeleteParams::background()).await {
                Ok(_) => {}
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(source) => {
                    return Err(Error::Sweep {
                        kind: K::KIND,
                        name,
                        source,
                    })
                }
            }
        }
        Ok(())
    }
}
