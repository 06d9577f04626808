//! Desired state: pure functions from a `FrontendExperience` to the Kubernetes
//! objects that run it. No I/O here; the controller applies what these return.

use std::collections::BTreeMap;

use facet_bff::spec::ExperienceSpec;
use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource,
    EnvVar, EnvVarSource, HTTPGetAction, ObjectFieldSelector, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    ResourceRequirements, SeccompProfile, Secret, SecretVolumeSource, SecurityContext, Service,
    ServicePort, ServiceSpec, Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};
use sha2::{Digest, Sha256};

use super::rebuild::{Phase, Plan, DEFINITION_LABEL};
use crate::api::{Endpoints, FrontendExperience};

use facet_bff::contract::{
    self, DATA_DIR, KAFKA_SECRET_DIR, PEER_TOKEN_DIR, PEER_TOKEN_FILE, SPEC_DIR, SPEC_FILE,
};
pub const HTTP_PORT: i32 = contract::HTTP_PORT as i32;
pub const METRICS_PORT: i32 = contract::METRICS_PORT as i32;
/// After SIGTERM a pod serves this long, not ready, while Services move clients
/// to other pods (endpoints take a moment to reach every proxy); well within the
/// termination grace period.
pub const DRAIN_SECONDS: u32 = 5;
/// Annotation on the pod template: a spec change changes it, which rolls the pods.
pub const SPEC_HASH_ANNOTATION: &str = "facet.dev/spec-hash";

/// Operator-wide settings that shape every experience.
#[derive(Debug, Clone, PartialEq)]
pub struct BuildConfig {
    /// The runtime image used unless an experience overrides it.
    pub image: String,
    /// `json` to have runtime pods log JSON lines (`FACET_LOG_FORMAT`), as the
    /// operator itself does; text otherwise.
    pub json_logs: bool,
    /// A NetworkPolicy per experience, unless the platform turned them off.
    pub network_policy: Option<NetworkPolicyConfig>,
    /// How long a rollout may wait for ready pods before it is reported stuck
    /// (`Progressing=False`, `Degraded=True`); `None`: no deadline.
    pub progress_deadline: Option<std::time::Duration>,
}

/// Who may reach an experience's pods, as the platform team sets it.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkPolicyConfig {
    /// Namespaces whose pods may use the HTTP port (the APIs); any namespace when
    /// empty.
    pub http_from_namespaces: Vec<String>,
    /// The operator's namespace: it reads the pods' readiness reports on the
    /// metrics port.
    pub operator_namespace: String,
    /// The namespace Prometheus scrapes the metrics port from.
    pub monitoring_namespace: String,
}

/// Everything one experience runs as.
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    /// The spec of the current definition's StatefulSet.
    pub config_map: ConfigMap,
    /// The current definition's StatefulSet (see [`set_name`]).
    pub stateful_set: StatefulSet,
    pub service: Service,
    pub headless_service: Service,
    /// Only with two or more replicas: a budget for one replica cannot allow any eviction.
    pub pod_disruption_budget: Option<PodDisruptionBudget>,
    /// Unless the platform turned them off (see [`NetworkPolicyConfig`]).
    pub network_policy: Option<NetworkPolicy>,
    /// A StatefulSet (and its ConfigMap) to leave exactly as it is: the one that
    /// serves while the current definition rebuilds.
    pub keep: Option<String>,
    /// The kept set and the replicas it is to have, when a scale during a rebuild
    /// changed them: it serves until the switch, so it follows `kubectl scale` and
    /// autoscalers as the new set does.
    pub resize_kept: Option<(String, i32)>,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("the resource has no {0}")]
    Missing(&'static str),
    #[error("writing the spec for the pods: {0}")]
    Serialize(String),
}

pub fn headless_name(name: &str) -> String {
    format!("{name}-headless")
}

/// The Secret whose token an experience's pods present to copy each other's store.
pub fn peer_token_name(name: &str) -> String {
    format!("{name}-peer-token")
}

/// The peer token Secret of `fx`, holding `token`. The controller makes it once
/// with a random token and never applies it again: changing the token while pods
/// run would only make copies fail until every pod had the new one.
pub fn peer_token_secret(fx: &FrontendExperience, token: &str) -> Result<Secret, BuildError> {
    let name = fx
        .metadata
        .name
        .as_deref()
        .ok_or(BuildError::Missing("name"))?;
    let namespace = fx
        .metadata
        .namespace
        .as_deref()
        .ok_or(BuildError::Missing("namespace"))?;
    let owner = fx
        .controller_owner_ref(&())
        .ok_or(BuildError::Missing("uid"))?;
    Ok(Secret {
        metadata: meta(&peer_token_name(name), namespace, &owner, name),
        string_data: Some(BTreeMap::from([(
            PEER_TOKEN_FILE.to_string(),
            token.to_string(),
        )])),
        ..Secret::default()
    })
}

/// The ConfigMap a StatefulSet's pods read their spec from.
pub fn config_map_name(stateful_set: &str) -> String {
    format!("{stateful_set}-spec")
}

/// The StatefulSet of one projection definition: `<name>-<first 10 hex digits>`.
pub fn set_name(name: &str, definition: &str) -> String {
    format!("{name}-{}", contract::definition_tag(definition))
}

/// The projection definition of a spec, as the runtime stamps its store.
pub fn definition(spec: &ExperienceSpec) -> String {
    facet_bff::spec::compile::definition_hash(spec)
}

/// The label naming the experience a child (a pod too) belongs to.
pub const INSTANCE_LABEL: &str = "app.kubernetes.io/instance";

/// Labels that select an experience's pods.
pub fn selector_labels(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "app.kubernetes.io/name".to_string(),
            "facet-bff".to_string(),
        ),
        (INSTANCE_LABEL.to_string(), name.to_string()),
    ])
}

/// The pods of one definition (`None`: every pod of the experience).
pub fn definition_selector(name: &str, definition: Option<&str>) -> BTreeMap<String, String> {
    let mut labels = selector_labels(name);
    if let Some(definition) = definition {
        labels.insert(DEFINITION_LABEL.into(), definition.into());
    }
    labels
}

/// A label selector as text, as `status.selector` and `kubectl -l` take it.
pub fn selector_text(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The label selector of every child the operator makes for experience `name`.
pub fn children_selector(name: &str) -> String {
    format!("app.kubernetes.io/instance={name},app.kubernetes.io/managed-by=facet-operator")
}

fn labels(name: &str) -> BTreeMap<String, String> {
    let mut labels = selector_labels(name);
    labels.insert(
        "app.kubernetes.io/managed-by".into(),
        "facet-operator".into(),
    );
    labels.insert(
        "app.kubernetes.io/component".into(),
        "backend-for-frontend".into(),
    );
    labels
}

/// The consumer group of each pod of `definition`, as the runtime derives it from
/// its definition and its pod name. At most [`replica_bound`] of them, whatever
/// `replicas` says.
pub fn consumer_groups(
    namespace: &str,
    name: &str,
    definition: &str,
    replicas: i32,
) -> Vec<String> {
    (0..replica_bound(replicas))
        .map(|i| contract::group_id(namespace, name, definition, &i.to_string()))
        .collect()
}

/// `replicas` within the spec's bound (0 to 100). Work the operator does per pod
/// goes up to this, never to the number as written: the compiler refuses a spec
/// out of bounds, but the operator still reports on it (and on an object stored
/// before the CRD had the bound).
pub fn replica_bound(replicas: i32) -> i32 {
    let bound = facet_bff::spec::bounds::REPLICAS;
    // The bound's ends are small: they fit in an i32.
    replicas.clamp(bound.min as i32, bound.max as i32)
}

pub fn endpoints(namespace: &str, name: &str, spec: &ExperienceSpec) -> Endpoints {
    let http = format!("http://{name}.{namespace}.svc");
    let ws = format!("ws://{name}.{namespace}.svc");
    Endpoints {
        rest: spec.api.rest.then(|| format!("{http}/v1")),
        graphql: spec.api.graphql.then(|| format!("{http}/graphql")),
        websocket: spec.api.websocket.then(|| format!("{ws}/ws")),
        sse: spec.api.sse.then(|| format!("{http}/sse")),
        http,
    }
}

/// Builds every child object of `fx`, with the Service where `plan` says.
pub fn desired(
    fx: &FrontendExperience,
    config: &BuildConfig,
    plan: &Plan,
) -> Result<Desired, BuildError> {
    let name = fx
        .metadata
        .name
        .clone()
        .ok_or(BuildError::Missing("name"))?;
    let namespace = fx
        .metadata
        .namespace
        .clone()
        .ok_or(BuildError::Missing("namespace"))?;
    let owner = fx
        .controller_owner_ref(&())
        .ok_or(BuildError::Missing("uid"))?;
    let spec = &fx.spec.experience;
    let definition = definition(spec);
    let set = set_name(&name, &definition);
    let serving = definition_selector(&name, plan.serve.as_deref());

    let config_map = spec_config_map(&name, &namespace, &set, spec, &owner)?;
    let spec_hash = hash(
        config_map
            .data
            .as_ref()
            .and_then(|d| d.get(SPEC_FILE))
            .map(String::as_str)
            .unwrap_or(""),
    );
    let pods = Pods {
        name: &name,
        set: &set,
        definition: &definition,
        spec_hash: &spec_hash,
    };
    Ok(Desired {
        stateful_set: stateful_set(&pods, &namespace, spec, &owner, config),
        service: service(&name, &namespace, &owner, &serving),
        headless_service: headless_service(&name, &namespace, &owner),
        pod_disruption_budget: (spec.replicas >= 2)
            .then(|| pod_disruption_budget(&name, &namespace, &owner, &serving)),
        network_policy: config
            .network_policy
            .as_ref()
            .map(|policy| network_policy(&name, &namespace, &owner, policy)),
        config_map,
        keep: plan.keep.clone(),
        resize_kept: match (&plan.keep, plan.kept_replicas, &plan.phase) {
            (Some(set), Some(now), Phase::Rebuilding { .. })
                if now != replica_bound(spec.replicas) =>
            {
                Some((set.clone(), replica_bound(spec.replicas)))
            }
            _ => None,
        },
    })
}

fn meta(name: &str, namespace: &str, owner: &OwnerReference, instance: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: Some(namespace.to_string()),
        labels: Some(labels(instance)),
        owner_references: Some(vec![owner.clone()]),
        ..ObjectMeta::default()
    }
}

fn hash(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The normalised spec (defaults filled in) as the manifest the runtime reads.
fn spec_config_map(
    name: &str,
    namespace: &str,
    set: &str,
    spec: &ExperienceSpec,
    owner: &OwnerReference,
) -> Result<ConfigMap, BuildError> {
    let manifest = serde_json::json!({
        "apiVersion": facet_bff::spec::manifest::API_VERSION,
        "kind": facet_bff::spec::manifest::KIND,
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    });
    // Never an empty spec for the pods: a spec that cannot be written stops here.
    let yaml =
        serde_yaml::to_string(&manifest).map_err(|e| BuildError::Serialize(e.to_string()))?;
    Ok(ConfigMap {
        metadata: meta(&config_map_name(set), namespace, owner, name),
        data: Some(BTreeMap::from([(SPEC_FILE.to_string(), yaml)])),
        ..ConfigMap::default()
    })
}

fn env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value: Some(value.to_string()),
        ..EnvVar::default()
    }
}

fn env_from_field(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.to_string(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

fn quantities(map: &BTreeMap<String, String>) -> Option<BTreeMap<String, Quantity>> {
    (!map.is_empty()).then(|| {
        map.iter()
            .map(|(k, v)| (k.clone(), Quantity(v.clone())))
            .collect()
    })
}

fn http_probe(path: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_string()),
            port: IntOrString::String("http".into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        ..Probe::default()
    }
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.to_string(),
        mount_path: path.to_string(),
        read_only: Some(read_only),
        ..VolumeMount::default()
    }
}

/// Who the pods of a StatefulSet are.
struct Pods<'a> {
    /// The experience.
    name: &'a str,
    /// The StatefulSet, one per definition.
    set: &'a str,
    definition: &'a str,
    /// Of the whole spec: any change rolls the pods.
    spec_hash: &'a str,
}

fn stateful_set(
    pods: &Pods<'_>,
    namespace: &str,
    spec: &ExperienceSpec,
    owner: &OwnerReference,
    config: &BuildConfig,
) -> StatefulSet {
    let name = pods.name;
    let selector = definition_selector(name, Some(pods.definition));
    let overrides = spec.pod_template.clone().unwrap_or_default();
    let persistent = spec.store.persistence.enabled;
    let (mounts, volumes) = volumes(pods, spec);
    let container = container(
        spec,
        config,
        env_vars(name, namespace, spec, config),
        mounts,
    );

    let mut pod_labels = labels(name);
    pod_labels.extend(overrides.labels.clone());
    pod_labels.extend(selector.clone());
    let mut annotations = overrides.annotations.clone();
    annotations.insert(SPEC_HASH_ANNOTATION.into(), pods.spec_hash.to_string());
    let claim = persistent.then(|| data_claim(spec, &selector));

    let mut metadata = meta(pods.set, namespace, owner, name);
    if let Some(labels) = metadata.labels.as_mut() {
        labels.insert(DEFINITION_LABEL.into(), pods.definition.into());
    }
    StatefulSet {
        metadata,
        spec: Some(StatefulSetSpec {
            replicas: Some(spec.replicas),
            service_name: Some(headless_name(name)),
            // Every pod is independent (its own consumer group and store): no need
            // to start them one after another.
            pod_management_policy: Some("Parallel".into()),
            // One definition's pods only: the sets of two definitions never claim
            // each other's pods.
            selector: LabelSelector {
                match_labels: Some(selector),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(annotations),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    volumes: Some(volumes),
                    service_account_name: overrides.service_account_name.clone(),
                    automount_service_account_token: Some(false),
                    node_selector: (!overrides.node_selector.is_empty())
                        .then(|| overrides.node_selector.clone()),
                    security_context: Some(pod_security_context()),
                    termination_grace_period_seconds: Some(30),
                    ..PodSpec::default()
                }),
            },
            volume_claim_templates: claim.map(|c| vec![c]),
            // A store belongs to its definition: when a newer one has taken over and
            // this set is removed, its volumes go too. Scaling down keeps them.
            persistent_volume_claim_retention_policy: persistent.then(|| {
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: Some("Delete".into()),
                    when_scaled: Some("Retain".into()),
                }
            }),
            ..StatefulSetSpec::default()
        }),
        ..StatefulSet::default()
    }
}

/// The runtime's environment (the contract in `facet_bff::contract`), then the
/// experience's own variables; never one set here (the compiler refuses those).
fn env_vars(
    name: &str,
    namespace: &str,
    spec: &ExperienceSpec,
    config: &BuildConfig,
) -> Vec<EnvVar> {
    let mut env_vars = vec![
        env_from_field(contract::ENV_POD_NAME, "metadata.name"),
        env_from_field(contract::ENV_NAMESPACE, "metadata.namespace"),
        env(contract::ENV_EXPERIENCE, name),
        env(contract::ENV_DATA_DIR, DATA_DIR),
        env(contract::ENV_HTTP_ADDR, &format!("0.0.0.0:{HTTP_PORT}")),
        env(
            contract::ENV_METRICS_ADDR,
            &format!("0.0.0.0:{METRICS_PORT}"),
        ),
        env(contract::ENV_DRAIN_SECONDS, &DRAIN_SECONDS.to_string()),
        // A pod with an empty store copies a ready peer's: every pod of the
        // experience is behind the headless Service's name (each answers only
        // for its own definition, and only once ready).
        env(
            contract::ENV_PEERS,
            &format!("{}.{namespace}.svc:{METRICS_PORT}", headless_name(name)),
        ),
        env(
            contract::ENV_PEER_TOKEN_FILE,
            &format!("{PEER_TOKEN_DIR}/{PEER_TOKEN_FILE}"),
        ),
        env_from_field(contract::ENV_POD_IP, "status.podIP"),
    ];
    if spec.kafka.secret_ref.is_some() {
        env_vars.push(env(contract::ENV_KAFKA_SECRET_DIR, KAFKA_SECRET_DIR));
    }
    if config.json_logs {
        env_vars.push(env(contract::ENV_LOG_FORMAT, "json"));
    }
    if let Some(overrides) = &spec.pod_template {
        env_vars.extend(overrides.env.iter().map(|(k, v)| env(k, v)));
    }
    env_vars
}

/// The pod's volumes and where the container mounts them: the spec, the store
/// (an emptyDir unless persistent: then the set's claim), scratch space, the
/// peer token, and the Kafka Secret when there is one.
fn volumes(pods: &Pods<'_>, spec: &ExperienceSpec) -> (Vec<VolumeMount>, Vec<Volume>) {
    let mut mounts = vec![
        mount("spec", SPEC_DIR, true),
        mount("data", DATA_DIR, false),
        mount("tmp", "/tmp", false),
        mount("peer-token", PEER_TOKEN_DIR, true),
    ];
    let mut volumes = vec![
        Volume {
            name: "spec".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: config_map_name(pods.set),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
        Volume {
            name: "tmp".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        },
        // Optional: without it a pod still starts, and replays its store.
        Volume {
            name: "peer-token".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(peer_token_name(pods.name)),
                optional: Some(true),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        },
    ];
    if !spec.store.persistence.enabled {
        volumes.push(Volume {
            name: "data".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        });
    }
    if let Some(secret) = &spec.kafka.secret_ref {
        mounts.push(mount("kafka-secret", KAFKA_SECRET_DIR, true));
        volumes.push(Volume {
            name: "kafka-secret".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret.name.clone()),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
    }
    (mounts, volumes)
}

/// The runtime's container: ports, probes, resources (the experience's on top of
/// the defaults) and a locked-down security context.
fn container(
    spec: &ExperienceSpec,
    config: &BuildConfig,
    env_vars: Vec<EnvVar>,
    mounts: Vec<VolumeMount>,
) -> Container {
    let overrides = spec.pod_template.clone().unwrap_or_default();
    let mut requests = BTreeMap::from([
        ("cpu".to_string(), "100m".to_string()),
        ("memory".to_string(), "128Mi".to_string()),
    ]);
    requests.extend(overrides.requests.clone());
    let mut limits = BTreeMap::from([("memory".to_string(), "512Mi".to_string())]);
    limits.extend(overrides.limits.clone());
    Container {
        name: "bff".into(),
        image: Some(
            overrides
                .image
                .clone()
                .unwrap_or_else(|| config.image.clone()),
        ),
        args: Some(vec![
            "run".into(),
            "--spec".into(),
            format!("{SPEC_DIR}/{SPEC_FILE}"),
        ]),
        env: Some(env_vars),
        ports: Some(vec![
            ContainerPort {
                name: Some("http".into()),
                container_port: HTTP_PORT,
                ..ContainerPort::default()
            },
            ContainerPort {
                name: Some("metrics".into()),
                container_port: METRICS_PORT,
                ..ContainerPort::default()
            },
        ]),
        liveness_probe: Some(http_probe("/healthz", 10, 3)),
        // Ready only once caught up with the topics: a replay may take a while.
        readiness_probe: Some(http_probe("/readyz", 2, 1)),
        resources: Some(ResourceRequirements {
            requests: quantities(&requests),
            limits: quantities(&limits),
            ..ResourceRequirements::default()
        }),
        security_context: Some(SecurityContext {
            run_as_non_root: Some(true),
            read_only_root_filesystem: Some(true),
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Capabilities::default()
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(mounts),
        ..Container::default()
    }
}

/// The store's claim, one per pod, when persistence is on.
fn data_claim(spec: &ExperienceSpec, selector: &BTreeMap<String, String>) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some("data".into()),
            labels: Some(selector.clone()),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: spec.store.persistence.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_string(),
                    Quantity(
                        spec.store
                            .persistence
                            .size
                            .clone()
                            .unwrap_or_else(|| "1Gi".into()),
                    ),
                )])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    }
}

fn pod_security_context() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(65532),
        fs_group: Some(65532),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..SeccompProfile::default()
        }),
        ..PodSecurityContext::default()
    }
}

fn http_service_port() -> ServicePort {
    ServicePort {
        name: Some("http".into()),
        port: 80,
        target_port: Some(IntOrString::String("http".into())),
        ..ServicePort::default()
    }
}

/// The Service clients use: it selects the serving definition's pods.
fn service(
    name: &str,
    namespace: &str,
    owner: &OwnerReference,
    serving: &BTreeMap<String, String>,
) -> Service {
    Service {
        metadata: meta(name, namespace, owner, name),
        spec: Some(ServiceSpec {
            selector: Some(serving.clone()),
            ports: Some(vec![http_service_port()]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// Stable per-pod DNS names for the StatefulSets, and a way to reach every pod
/// (of every definition).
fn headless_service(name: &str, namespace: &str, owner: &OwnerReference) -> Service {
    Service {
        metadata: meta(&headless_name(name), namespace, owner, name),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            selector: Some(selector_labels(name)),
            publish_not_ready_addresses: Some(true),
            ports: Some(vec![
                http_service_port(),
                ServicePort {
                    name: Some("metrics".into()),
                    port: METRICS_PORT,
                    target_port: Some(IntOrString::String("metrics".into())),
                    ..ServicePort::default()
                },
            ]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// Who may reach the experience's pods: the HTTP port from the namespaces the
/// platform allows (any by default); the metrics port, which also serves the store
/// image to peers, only from the monitoring namespace and the experience's own pods.
fn network_policy(
    name: &str,
    namespace: &str,
    owner: &OwnerReference,
    config: &NetworkPolicyConfig,
) -> NetworkPolicy {
    let in_namespace = |ns: &str| NetworkPolicyPeer {
        namespace_selector: Some(LabelSelector {
            match_labels: Some(BTreeMap::from([(
                "kubernetes.io/metadata.name".to_string(),
                ns.to_string(),
            )])),
            ..LabelSelector::default()
        }),
        ..NetworkPolicyPeer::default()
    };
    let port = |name: &str| {
        Some(vec![NetworkPolicyPort {
            port: Some(IntOrString::String(name.into())),
            protocol: Some("TCP".into()),
            ..NetworkPolicyPort::default()
        }])
    };
    let http_from = match config.http_from_namespaces.is_empty() {
        true => None,
        false => Some(
            config
                .http_from_namespaces
                .iter()
                .map(|ns| in_namespace(ns))
                .collect(),
        ),
    };
    let own_pods = NetworkPolicyPeer {
        pod_selector: Some(LabelSelector {
            match_labels: Some(selector_labels(name)),
            ..LabelSelector::default()
        }),
        ..NetworkPolicyPeer::default()
    };
    NetworkPolicy {
        metadata: meta(name, namespace, owner, name),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(selector_labels(name)),
                ..LabelSelector::default()
            }),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(vec![
                NetworkPolicyIngressRule {
                    ports: port("http"),
                    from: http_from,
                },
                // Prometheus; the operator, for the readiness report; the
                // experience's own pods, for a peer's store image.
                NetworkPolicyIngressRule {
                    ports: port("metrics"),
                    from: Some(vec![
                        in_namespace(&config.monitoring_namespace),
                        in_namespace(&config.operator_namespace),
                        own_pods,
                    ]),
                },
            ]),
            ..NetworkPolicySpec::default()
        }),
    }
}

/// Guards the serving pods only: pods still rebuilding are not ready, and counting
/// them would block every eviction until the rebuild ends.
fn pod_disruption_budget(
    name: &str,
    namespace: &str,
    owner: &OwnerReference,
    serving: &BTreeMap<String, String>,
) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: meta(name, namespace, owner, name),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(serving.clone()),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    }
}

/// The child's name and namespace, for logs and deletion.
pub fn object_ref<K: Resource<DynamicType = ()>>(object: &K) -> String {
    format!("{} {}", K::kind(&()), object.name_any())
}
