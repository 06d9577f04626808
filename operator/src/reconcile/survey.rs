//! What exists before a reconcile changes anything: the experience's
//! StatefulSets and the definition its Service selects.

use k8s_openapi::api::apps::v1::StatefulSet;
use kube::ResourceExt;

use super::children::{self, Children};
use super::rebuild::{self, Plan, SetState, DEFINITION_LABEL};
use super::status::Rollout;
use crate::api::FrontendExperience;

/// The experience's StatefulSets and the definition its Service selects, as they
/// are before this reconcile changes anything.
pub struct Survey {
    sets: Vec<StatefulSet>,
    /// `None`: no Service yet; `Some(None)`: a Service without the definition label.
    pub service_selects: Option<Option<String>>,
}

impl Survey {
    /// From the caches of the children (see [`super::children`]).
    pub fn take(children: &Children, fx: &FrontendExperience, namespace: &str) -> Survey {
        let name = fx.name_any();
        let uid = fx.uid().unwrap_or_default();
        let sets = children::of(&children.stateful_sets, namespace, &name)
            .into_iter()
            .filter(|sts| sts.owner_references().iter().any(|o| o.uid == uid))
            .map(|sts| (*sts).clone())
            .collect();
        let service_selects =
            children::named(&children.services, namespace, &name).map(|service| {
                service
                    .spec
                    .as_ref()
                    .and_then(|s| s.selector.as_ref())
                    .and_then(|selector| selector.get(DEFINITION_LABEL).cloned())
            });
        Survey {
            sets,
            service_selects,
        }
    }

    pub fn plan(&self, target: &str) -> Plan {
        let states: Vec<SetState> = self
            .sets
            .iter()
            .map(|sts| {
                let replicas = sts.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                SetState {
                    name: sts.name_any(),
                    definition: definition_of(sts),
                    settled: Rollout::of(sts).settled(replicas),
                    replicas,
                }
            })
            .collect();
        let selects = self.service_selects.as_ref().map(Option::as_deref);
        rebuild::plan(target, selects, &states)
    }
}

impl Survey {
    /// Why `desired` cannot replace the set of the same name, if one exists and
    /// its store volumes differ (see [`super::storage`]).
    pub fn storage_change(&self, desired: &StatefulSet) -> Option<String> {
        let existing = self
            .sets
            .iter()
            .find(|sts| sts.metadata.name == desired.metadata.name)?;
        super::storage::change(existing, desired)
    }
}

fn definition_of(sts: &StatefulSet) -> Option<String> {
    sts.labels().get(DEFINITION_LABEL).cloned()
}
