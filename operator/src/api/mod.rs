//! The `FrontendExperience` custom resource. Its spec is the runtime's own spec type,
//! so the operator and the runtime can never disagree on what a field means.

use facet_bff::spec::ExperienceSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A Backend-for-Frontend for one user experience: the Kafka topics it reads, the
/// projections it keeps, who may see which rows, and the APIs it serves.
// Each `printcolumn(...)` names `type_` and `json_path`; clippy reads them as one
// attribute repeated.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "facet.dev",
    version = "v1alpha1",
    kind = "FrontendExperience",
    plural = "frontendexperiences",
    shortname = "fx",
    category = "facet",
    namespaced,
    status = "FrontendExperienceStatus",
    // `kubectl scale fx/<name>` and HorizontalPodAutoscalers change `spec.replicas`.
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    derive = "PartialEq",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason"
    ),
    printcolumn(name = "Replicas", type_ = "integer", json_path = ".spec.replicas"),
    printcolumn(
        name = "Available",
        type_ = "integer",
        json_path = ".status.readyReplicas"
    ),
    printcolumn(
        name = "Rebuild",
        type_ = "integer",
        json_path = ".status.rebuild.percent"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(
        name = "Spec Valid",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"SpecValid\")].status",
        priority = "1"
    )
)]
pub struct FrontendExperienceSpec {
    #[serde(flatten)]
    pub experience: ExperienceSpec,
}

/// What the operator observed and did, in kstatus shape.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FrontendExperienceStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// `SpecValid`, `Ready`, `Progressing` and `Degraded`.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,

    /// Runtime pods that exist.
    #[serde(default)]
    pub replicas: i32,

    /// Runtime pods that have caught up with their topics and serve clients.
    #[serde(default)]
    pub ready_replicas: i32,

    /// The label selector of the runtime pods, as text (the scale subresource's, for autoscalers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,

    /// The Kafka consumer group of each pod (`facet.<namespace>.<name>.<ordinal>`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub consumer_groups: Vec<String>,

    /// Where clients reach the experience inside the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<Endpoints>,

    /// The projection definition the serving pods hold (the hash of the sources
    /// and projections; also the epoch of client positions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub definition: Option<String>,

    /// A changed projection definition being built beside the serving pods; the
    /// Service moves to it once every new pod has caught up with the topics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rebuild: Option<Rebuild>,

    /// What the latest generation of the spec does to the running pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_change: Option<LastChange>,
}

/// The kind of change a generation brought, as it was first applied.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LastChange {
    pub generation: i64,
    /// `Initial` (the pods build their stores), `ServingOnly` (descriptions,
    /// `deprecated`, `access`, API settings, limits: the pods restart on their
    /// stores, nothing replays and clients keep their positions) or `Rebuild` (the
    /// rows change: a new StatefulSet replays the topics beside the serving pods).
    pub kind: String,
    pub message: String,
}

/// The progress of a rebuild.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Rebuild {
    /// The definition being built.
    pub definition: String,
    /// The StatefulSet whose pods replay the topics.
    pub stateful_set: String,
    /// New pods that exist and that have caught up.
    pub replicas: i32,
    pub ready_replicas: i32,
    /// Source partitions each new pod replays, and how many the slowest has caught up with.
    pub partitions: i32,
    pub partitions_caught_up: i32,
    /// How much of the replay the slowest new pod has done.
    pub percent: i32,
}

/// In-cluster URLs of the served APIs.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Endpoints {
    /// Base URL of the HTTP service.
    pub http: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rest: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub graphql: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub websocket: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sse: Option<String>,
}
