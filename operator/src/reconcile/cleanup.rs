//! Optional external cleanup: the experience's Kafka consumer groups, when it is
//! deleted and, after a switch, those of the definition it replaced. Only with
//! `--delete-consumer-groups`; otherwise no finalizer is ever added, deletion is
//! plain garbage collection and groups stay on the brokers.

use std::time::{Duration, Instant};

use facet_bff::contract;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::types::RDKafkaErrorCode;
use tracing::{info, warn};

use super::builders::{
    children_selector, consumer_groups, definition, definition_selector, selector_text,
};
use super::error::CleanupError as Error;
use super::kafka::NoClient;
use crate::api::FrontendExperience;
use rdkafka::consumer::{BaseConsumer, Consumer};

pub const FINALIZER: &str = "facet.dev/consumer-groups";

/// Stops the pods of every definition (so none commits an offset again), then
/// deletes every group the experience's pods may have used.
pub async fn delete_consumer_groups(client: &Client, fx: &FrontendExperience) -> Result<(), Error> {
    let namespace = fx.namespace().unwrap_or_default();
    let name = fx.name_any();
    stop_every_set(client, fx, &namespace, &name).await?;
    let Some(config) = kafka_config(client, fx).await? else {
        return Ok(());
    };
    let spec = &fx.spec.experience;
    let today = consumer_groups(&namespace, &name, &definition(spec), spec.replicas.max(1));
    let groups = groups_to_delete(&config, today, move |group| {
        contract::is_group_of(&namespace, &name, group)
    })
    .await?;
    delete_groups(&config, &groups).await
}

/// After a switch, once no pod of the definition that served before runs any
/// more, deletes its groups: lag tools then show only the groups of what runs.
pub async fn delete_groups_of_replaced(
    client: &Client,
    fx: &FrontendExperience,
    replaced: &str,
) -> Result<(), Error> {
    let namespace = fx.namespace().unwrap_or_default();
    let name = fx.name_any();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let selector = selector_text(&definition_selector(&name, Some(replaced)));
    let deadline = Instant::now() + REPLACED_PODS_DEADLINE;
    loop {
        let left = pods
            .list_metadata(&ListParams::default().labels(&selector))
            .await?
            .items
            .len();
        if left == 0 {
            break;
        }
        if Instant::now() > deadline {
            return Err(Error::Failed(format!(
                "{left} pods of the replaced definition {replaced} still run"
            )));
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let Some(config) = kafka_config(client, fx).await? else {
        return Ok(());
    };
    let known = consumer_groups(
        &namespace,
        &name,
        replaced,
        fx.spec.experience.replicas.max(1),
    );
    let replaced = replaced.to_string();
    let groups = groups_to_delete(&config, known, move |group| {
        contract::is_group_of_definition(&namespace, &name, &replaced, group)
    })
    .await?;
    delete_groups(&config, &groups).await
}

/// How long the pods of a replaced definition may take to stop (they drain first).
const REPLACED_PODS_DEADLINE: Duration = Duration::from_secs(600);

/// The same client properties the pods use, from the same Secret (SASL, TLS);
/// `None` when the operator may not make a client (the groups are left).
async fn kafka_config(
    client: &Client,
    fx: &FrontendExperience,
) -> Result<Option<ClientConfig>, Error> {
    match super::kafka::client_config(client, fx).await {
        Ok(config) => Ok(Some(config)),
        Err(NoClient::Secret(e)) => Err(e.into()),
        // Deletion must not wait for what the operator will never do.
        Err(why @ NoClient::TenantTokenEndpoint) => {
            warn!(experience = %fx.name_any(), %why, "the consumer groups are left on the brokers");
            Ok(None)
        }
    }
}

async fn delete_groups(config: &ClientConfig, groups: &[String]) -> Result<(), Error> {
    if groups.is_empty() {
        return Ok(());
    }
    let admin: AdminClient<DefaultClientContext> = config
        .create()
        .map_err(|e| Error::Failed(format!("kafka admin client: {e}")))?;
    let names: Vec<&str> = groups.iter().map(String::as_str).collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin
        .delete_groups(&names, &options)
        .await
        .map_err(|e| Error::Failed(format!("deleting consumer groups: {e}")))?;
    for result in results {
        match result {
            Ok(group) => info!(%group, "deleted consumer group"),
            Err((_, RDKafkaErrorCode::GroupIdNotFound)) => {}
            Err((group, code)) => {
                return Err(Error::Failed(format!(
                    "deleting consumer group {group}: {code}"
                )))
            }
        }
    }
    Ok(())
}

/// Scales every StatefulSet of the experience (one per definition: the serving
/// one and one still rebuilding) to zero and waits until none has a pod left.
async fn stop_every_set(
    client: &Client,
    fx: &FrontendExperience,
    namespace: &str,
    name: &str,
) -> Result<(), Error> {
    let statefulsets: Api<StatefulSet> = Api::namespaced(client.clone(), namespace);
    let owner = fx.uid().unwrap_or_default();
    let sets: Vec<String> = statefulsets
        .list_metadata(&ListParams::default().labels(&children_selector(name)))
        .await?
        .items
        .into_iter()
        .filter(|set| set.owner_references().iter().any(|o| o.uid == owner))
        .map(|set| set.name_any())
        .collect();
    let scale = serde_json::json!({"spec": {"replicas": 0}});
    for set in &sets {
        match statefulsets
            .patch(set, &PatchParams::default(), &Patch::Merge(&scale))
            .await
        {
            Ok(_) => {}
            // Already garbage-collected: nothing runs any more.
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    for set in &sets {
        loop {
            let running = statefulsets
                .get_opt(set)
                .await?
                .and_then(|s| s.status)
                .map_or(0, |s| s.replicas);
            if running == 0 {
                break;
            }
            if Instant::now() > deadline {
                return Err(Error::Failed(format!("{running} pods of {set} still run")));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    Ok(())
}

/// `known` (a group may exist only as committed offsets, which the group list
/// does not show) and every group on the brokers that `ours` claims.
async fn groups_to_delete(
    config: &ClientConfig,
    known: Vec<String>,
    ours: impl Fn(&str) -> bool + Send + 'static,
) -> Result<Vec<String>, Error> {
    let config = config.clone();
    let listed: Vec<String> = tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = config.create()?;
        let list = consumer.fetch_group_list(None, Duration::from_secs(30))?;
        let names = list.groups().iter().map(|g| g.name().to_string()).collect();
        Ok::<_, rdkafka::error::KafkaError>(names)
    })
    .await
    .map_err(|e| Error::Failed(e.to_string()))?
    .map_err(|e| Error::Failed(format!("listing consumer groups: {e}")))?;
    let mut groups = known;
    for group in listed {
        if ours(&group) && !groups.contains(&group) {
            groups.push(group);
        }
    }
    Ok(groups)
}
