//! The apply phase: every desired child is server-side applied under one field
//! manager, then every child this operator made for the experience that is no
//! longer desired is deleted (the orphan sweep), so what runs is exactly what the
//! builders return, whatever an earlier version of the spec or the operator made.

use std::fmt::Debug;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::builders::{children_selector, config_map_name, peer_token_secret, BuildError, Desired};
use super::error::Error;
use crate::api::FrontendExperience;

pub const FIELD_MANAGER: &str = "facet-operator";

/// Applies `desired` for `fx` and sweeps what is no longer in it.
pub async fn apply_all(
    client: &Client,
    fx: &FrontendExperience,
    desired: &Desired,
) -> Result<(), Error> {
    let namespace = &fx.namespace().ok_or(BuildError::Missing("namespace"))?;
    ensure_peer_token(Api::namespaced(client.clone(), namespace), fx).await?;
    apply(
        Api::namespaced(client.clone(), namespace),
        &desired.config_map,
    )
    .await?;
    apply(Api::namespaced(client.clone(), namespace), &desired.service).await?;
    apply(
        Api::namespaced(client.clone(), namespace),
        &desired.headless_service,
    )
    .await?;
    apply(
        Api::namespaced(client.clone(), namespace),
        &desired.stateful_set,
    )
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
        apply(Api::namespaced(client.clone(), namespace), budget).await?;
    }
    if let Some(policy) = &desired.network_policy {
        apply(Api::namespaced(client.clone(), namespace), policy).await?;
    }

    let selector = children_selector(&fx.name_any());
    let owner = fx.uid().ok_or(BuildError::Missing("uid"))?;
    let owned = Owned {
        selector: &selector,
        owner: &owner,
    };
    // The set that serves while the current definition rebuilds stays as it is.
    let kept_set = desired.keep.iter().cloned();
    let kept_config_map = desired.keep.iter().map(|set| config_map_name(set));
    let config_maps: Vec<String> = std::iter::once(desired.config_map.name_any())
        .chain(kept_config_map)
        .collect();
    sweep::<ConfigMap>(client, namespace, &owned, &config_maps).await?;
    let services = [
        desired.service.name_any(),
        desired.headless_service.name_any(),
    ];
    sweep::<Service>(client, namespace, &owned, &services).await?;
    let statefulsets: Vec<String> = std::iter::once(desired.stateful_set.name_any())
        .chain(kept_set)
        .collect();
    sweep::<StatefulSet>(client, namespace, &owned, &statefulsets).await?;
    let budgets: Vec<String> = desired
        .pod_disruption_budget
        .iter()
        .map(|b| b.name_any())
        .collect();
    sweep::<PodDisruptionBudget>(client, namespace, &owned, &budgets).await?;
    let policies: Vec<String> = desired
        .network_policy
        .iter()
        .map(|p| p.name_any())
        .collect();
    sweep::<NetworkPolicy>(client, namespace, &owned, &policies).await?;
    Ok(())
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

/// Server-side apply under the operator's field manager; it owns what it sets.
async fn apply<K>(api: Api<K>, object: &K) -> Result<(), Error>
where
    K: Resource<DynamicType = ()>
        + k8s_openapi::Resource
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned,
{
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let name = object.name_any();
    api.patch(&name, &params, &Patch::Apply(object))
        .await
        .map_err(|source| Error::Apply {
            kind: K::KIND,
            name,
            source,
        })?;
    Ok(())
}

/// What marks a child of this experience: its labels and its owner's uid.
struct Owned<'a> {
    selector: &'a str,
    owner: &'a str,
}

/// Deletes the objects of kind `K` that carry the experience's labels, are owned by
/// it, and are not in `keep`.
async fn sweep<K>(
    client: &Client,
    namespace: &str,
    owned: &Owned<'_>,
    keep: &[String],
) -> Result<(), Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + k8s_openapi::Resource
        + Clone
        + Debug
        + DeserializeOwned,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let error = |name: &str| {
        let name = name.to_string();
        move |source| Error::Sweep {
            kind: K::KIND,
            name,
            source,
        }
    };
    let listed = api
        .list_metadata(&ListParams::default().labels(owned.selector))
        .await
        .map_err(error("list"))?;
    for object in listed.items {
        let name = object.name_any();
        let ours = object
            .metadata
            .owner_references
            .iter()
            .flatten()
            .any(|o| o.uid == owned.owner);
        if keep.contains(&name) || !ours {
            continue;
        }
        match api.delete(&name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(e) => return Err(error(&name)(e)),
        }
    }
    Ok(())
}
