//! The status the operator reports, computed from what it observed (pure).
//! Conditions follow the kstatus conventions that Argo CD, Flux and
//! `kubectl wait` understand.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use super::progress::NotReady;
use crate::api::{Endpoints, FrontendExperienceStatus, LastChange, Rebuild};

pub const SPEC_VALID: &str = "SpecValid";
pub const READY: &str = "Ready";
pub const PROGRESSING: &str = "Progressing";
pub const DEGRADED: &str = "Degraded";
/// Whether the source topics still hold every event, so a full replay (a new
/// replica, a rebuilt store) reaches what the running pods show.
pub const REPLAYABLE: &str = "Replayable";
/// kstatus's conditions, derived from `Progressing` and `Degraded`.
pub const RECONCILING: &str = "Reconciling";
pub const STALLED: &str = "Stalled";
/// `Degraded`'s reason when the API server refused a child.
pub const APPLY_FAILED: &str = "ApplyFailed";
/// `Progressing=False` and `Degraded=True` when a rollout made no progress in time.
pub const PROGRESS_DEADLINE_EXCEEDED: &str = "ProgressDeadlineExceeded";
const ROLLING_OUT: &str = "RollingOut";

/// What a StatefulSet reports.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rollout {
    pub generation: i64,
    pub observed_generation: i64,
    pub replicas: i32,
    pub ready_replicas: i32,
    pub updated_replicas: i32,
}

impl Rollout {
    pub fn of(sts: &k8s_openapi::api::apps::v1::StatefulSet) -> Rollout {
        let status = sts.status.clone().unwrap_or_default();
        Rollout {
            generation: sts.metadata.generation.unwrap_or(0),
            observed_generation: status.observed_generation.unwrap_or(0),
            replicas: status.replicas,
            ready_replicas: status.ready_replicas.unwrap_or(0),
            updated_replicas: status.updated_replicas.unwrap_or(0),
        }
    }

    /// Every one of `desired` replicas is up to date and ready, and no other runs.
    pub fn settled(&self, desired: i32) -> bool {
        self.observed_generation >= self.generation
            && self.updated_replicas >= desired
            && self.ready_replicas >= desired
            && self.replicas == desired
    }
}

/// Everything the status is computed from.
#[derive(Debug, Clone)]
pub struct Observed {
    pub generation: Option<i64>,
    pub desired_replicas: i32,
    /// The compiler's errors when the spec is invalid.
    pub spec_error: Option<String>,
    /// The serving pods' StatefulSet.
    pub rollout: Option<Rollout>,
    /// The definition the serving pods hold.
    pub definition: Option<String>,
    /// A new definition being built beside them.
    pub rebuild: Option<Rebuild>,
    /// The definition of the spec (none when it is invalid).
    pub target: Option<String>,
    /// What the API server said when it refused a child.
    pub apply_error: Option<String>,
    /// How long pods may take to become ready before the rollout counts as stuck
    /// (`None`: no deadline).
    pub progress_deadline: Option<std::time::Duration>,
    /// What the pods of a serving set that is not settled say: the cause a pod
    /// reports (`Degraded`'s reason, `KafkaUnreachable`, `SourceUnavailable`,
    /// `IngestFailed`, and message), and whether any runs.
    pub pods: NotReady,
    pub consumer_groups: Vec<String>,
    pub endpoints: Endpoints,
    /// The pods' label selector, e.g. `app.kubernetes.io/instance=web,app.kubernetes.io/name=facet-bff`.
    pub selector: String,
    /// The retention verdict (see [`super::retention::judge`]); `None` when the
    /// brokers could not be asked this time.
    pub retention: Option<Result<(), String>>,
}

pub fn next_status(
    previous: Option<&FrontendExperienceStatus>,
    observed: &Observed,
    now: &Time,
) -> FrontendExperienceStatus {
    let previous_conditions = previous
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let condition = |type_: &str, status: bool, reason: &str, message: String| {
        make_condition(
            previous_conditions,
            type_,
            status,
            reason,
            message,
            observed.generation,
            now,
        )
    };
    let rollout = observed.rollout.clone().unwrap_or_default();
    let desired = observed.desired_replicas;
    let settled = rollout.settled(desired);
    let replicas_message = format!(
        "{}/{} replicas ready, {} up to date",
        rollout.ready_replicas, desired, rollout.updated_replicas
    );

    let mut conditions = match (&observed.spec_error, &observed.rebuild) {
        (Some(error), _) => {
            // The running pods keep serving the last valid spec; Ready keeps telling
            // how they do, and Degraded says the new spec was not taken.
            let ready = previous_conditions
                .iter()
                .find(|c| c.type_ == READY)
                .cloned()
                .unwrap_or_else(|| {
                    condition(
                        READY,
                        false,
                        "InvalidSpec",
                        "the spec has never been valid".into(),
                    )
                });
            vec![
                condition(SPEC_VALID, false, "InvalidSpec", error.clone()),
                ready,
                condition(
                    PROGRESSING,
                    false,
                    "InvalidSpec",
                    "waiting for a valid spec".into(),
                ),
                condition(DEGRADED, true, "InvalidSpec", error.clone()),
            ]
        }
        (None, Some(rebuild)) => vec![
            condition(SPEC_VALID, true, "Valid", "the spec compiles".into()),
            match settled {
                true => condition(READY, true, "AllReplicasReady", replicas_message),
                false => condition(READY, false, "ReplicasNotReady", replicas_message),
            },
            condition(PROGRESSING, true, "Rebuilding", rebuild_message(rebuild)),
            condition(DEGRADED, false, "AsExpected", "".into()),
        ],
        (None, None) if settled => vec![
            condition(SPEC_VALID, true, "Valid", "the spec compiles".into()),
            condition(READY, true, "AllReplicasReady", replicas_message),
            condition(
                PROGRESSING,
                false,
                "Complete",
                "the rollout is complete".into(),
            ),
            condition(DEGRADED, false, "AsExpected", "".into()),
        ],
        (None, None) => {
            let ready = condition(
                READY,
                false,
                "ReplicasNotReady",
                format!("{replicas_message} (pods become ready once caught up with Kafka)"),
            );
            let (progressing, degraded) = match rollout_stuck(previous_conditions, observed, now) {
                Some(waited) => {
                    let cause = match &observed.pods.problem {
                        Some((_, problem)) => problem.clone(),
                        None => "see the pods' /readyz and logs".into(),
                    };
                    let message = format!("no progress in {waited} s: {replicas_message}; {cause}");
                    (
                        condition(
                            PROGRESSING,
                            false,
                            PROGRESS_DEADLINE_EXCEEDED,
                            message.clone(),
                        ),
                        condition(DEGRADED, true, PROGRESS_DEADLINE_EXCEEDED, message),
                    )
                }
                None => {
                    let mut progressing =
                        condition(PROGRESSING, true, ROLLING_OUT, replicas_message);
                    if rollout_of(previous_conditions, observed.generation).is_none() {
                        // This generation's rollout starts now, whatever came before.
                        progressing.last_transition_time = now.clone();
                    }
                    let degraded = match &observed.pods.problem {
                        Some((reason, message)) => {
                            condition(DEGRADED, true, reason, message.clone())
                        }
                        None => condition(DEGRADED, false, "AsExpected", "".into()),
                    };
                    (progressing, degraded)
                }
            };
            vec![
                condition(SPEC_VALID, true, "Valid", "the spec compiles".into()),
                ready,
                progressing,
                degraded,
            ]
        }
    };
    if let Some(error) = &observed.apply_error {
        for c in conditions.iter_mut().filter(|c| c.type_ == DEGRADED) {
            *c = condition(DEGRADED, true, APPLY_FAILED, error.clone());
        }
    }
    // kstatus's abnormal-true conditions (what Flux and kpt judge by): `Stalled`
    // while Degraded (kstatus: Failed), else `Reconciling` while Progressing
    // (InProgress), so a rebuild that serves meanwhile is not called Current.
    let holds = |type_: &str| {
        conditions
            .iter()
            .find(|c| c.type_ == type_ && c.status == "True")
            .map(|c| (c.reason.clone(), c.message.clone()))
    };
    let (degraded, progressing) = (holds(DEGRADED), holds(PROGRESSING));
    let stalled = match &degraded {
        Some((reason, message)) => condition(STALLED, true, reason, message.clone()),
        None => condition(STALLED, false, "AsExpected", "".into()),
    };
    let reconciling = match (&degraded, progressing) {
        (None, Some((reason, message))) => condition(RECONCILING, true, &reason, message),
        _ => condition(RECONCILING, false, "Idle", "".into()),
    };
    conditions.extend([reconciling, stalled]);
    let replayable = match &observed.retention {
        Some(Ok(())) => Some(condition(
            REPLAYABLE,
            true,
            "AllRecordsKept",
            "every source topic keeps every record".into(),
        )),
        Some(Err(why)) => Some(condition(
            REPLAYABLE,
            false,
            "RetentionLimited",
            why.clone(),
        )),
        // Not asked this time: what was last known stands.
        None => previous_conditions
            .iter()
            .find(|c| c.type_ == REPLAYABLE)
            .cloned(),
    };
    conditions.extend(replayable);
    FrontendExperienceStatus {
        observed_generation: observed.generation,
        conditions,
        replicas: rollout.replicas,
        ready_replicas: rollout.ready_replicas,
        selector: Some(observed.selector.clone()),
        consumer_groups: observed.consumer_groups.clone(),
        endpoints: Some(observed.endpoints.clone()),
        definition: observed.definition.clone(),
        rebuild: observed.rebuild.clone(),
        last_change: last_change(previous, observed),
    }
}

/// The kind of change this generation brought, decided when it is first observed
/// (from the definition that served before it) and kept for the generation.
fn last_change(
    previous: Option<&FrontendExperienceStatus>,
    observed: &Observed,
) -> Option<LastChange> {
    let kept = previous.and_then(|p| p.last_change.clone());
    let (Some(generation), Some(target)) = (observed.generation, &observed.target) else {
        return kept;
    };
    if kept.as_ref().is_some_and(|c| c.generation == generation) {
        return kept;
    }
    let serving = previous.and_then(|p| p.definition.as_deref());
    let (kind, message) = super::rebuild::change_note(serving, target);
    Some(LastChange {
        generation,
        kind: kind.into(),
        message: message.into(),
    })
}

fn rebuild_message(rebuild: &Rebuild) -> String {
    format!(
        "the changed projections replay beside the serving pods: {}% done, {}/{} partitions caught up, {}/{} new pods ready; the Service moves when all are",
        rebuild.percent,
        rebuild.partitions_caught_up,
        rebuild.partitions,
        rebuild.ready_replicas,
        rebuild.replicas
    )
}

/// The previous status's `Progressing` condition if it already reported this
/// generation rolling out (or stuck doing so): its transition time is when the
/// rollout began.
fn rollout_of(previous: &[Condition], generation: Option<i64>) -> Option<&Condition> {
    previous.iter().find(|c| {
        c.type_ == PROGRESSING
            && c.observed_generation == generation
            && (c.reason == ROLLING_OUT || c.reason == PROGRESS_DEADLINE_EXCEEDED)
    })
}

/// Seconds this generation's rollout has waited, once past the deadline.
fn rollout_stuck(previous: &[Condition], observed: &Observed, now: &Time) -> Option<i64> {
    let deadline = observed.progress_deadline?;
    let since = rollout_of(previous, observed.generation)?;
    let waited = now.0.as_second() - since.last_transition_time.0.as_second();
    (since.reason == PROGRESS_DEADLINE_EXCEEDED || waited > deadline.as_secs() as i64)
        .then_some(waited)
}

/// A condition; its `lastTransitionTime` stays as it was unless its status changed.
fn make_condition(
    previous: &[Condition],
    type_: &str,
    status: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: &Time,
) -> Condition {
    let status = if status { "True" } else { "False" }.to_string();
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| now.clone());
    Condition {
        type_: type_.to_string(),
        status,
        reason: reason.to_string(),
        message,
        observed_generation: generation,
        last_transition_time,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn time(seconds: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(seconds).unwrap())
    }

    fn observed(rollout: Rollout, spec_error: Option<&str>) -> Observed {
        Observed {
            generation: Some(3),
            desired_replicas: 2,
            spec_error: spec_error.map(String::from),
            rollout: Some(rollout),
            consumer_groups: vec![],
            endpoints: Endpoints::default(),
            selector: "app=x".into(),
            retention: None,
            definition: Some("a".into()),
            rebuild: None,
            target: Some("a".into()),
            apply_error: None,
            progress_deadline: Some(std::time::Duration::from_secs(600)),
            pods: NotReady::default(),
        }
    }

    #[test]
    fn a_pod_that_cannot_reach_kafka_degrades_the_experience_at_once() {
        let stuck = Rollout {
            ready_replicas: 0,
            ..SETTLED
        };
        let observed = Observed {
            pods: NotReady {
                problem: Some((
                    "KafkaUnreachable",
                    "web-0: SASL authentication failed".into(),
                )),
                running: true,
            },
            ..observed(stuck, None)
        };
        let status = next_status(None, &observed, &time(100));
        let degraded = get(&status, DEGRADED);
        assert_eq!(
            (degraded.status.as_str(), degraded.reason.as_str()),
            ("True", "KafkaUnreachable")
        );
        assert_eq!(degraded.message, "web-0: SASL authentication failed");
        assert_eq!(
            get(&status, PROGRESSING).status,
            "True",
            "until the deadline"
        );
        // kstatus: Failed (Stalled), not InProgress, however much it still rolls out.
        let (stalled, reconciling) = (get(&status, STALLED), get(&status, RECONCILING));
        assert_eq!(
            (stalled.status.as_str(), stalled.reason.as_str()),
            ("True", "KafkaUnreachable")
        );
        assert_eq!(stalled.message, degraded.message);
        assert_eq!(reconciling.status, "False");
    }

    #[test]
    fn kstatus_conditions_follow_progressing_and_degraded() {
        let rolling = Rollout {
            ready_replicas: 1,
            ..SETTLED
        };
        let status = next_status(None, &observed(rolling, None), &time(100));
        let reconciling = get(&status, RECONCILING);
        assert_eq!(
            (reconciling.status.as_str(), reconciling.reason.as_str()),
            ("True", "RollingOut")
        );
        assert_eq!(get(&status, STALLED).status, "False");
        let settled = next_status(Some(&status), &observed(SETTLED, None), &time(200));
        assert_eq!(get(&settled, RECONCILING).status, "False");
        assert_eq!(get(&settled, STALLED).status, "False");
        let invalid = next_status(Some(&settled), &observed(SETTLED, Some("bad")), &time(300));
        assert_eq!(get(&invalid, STALLED).status, "True");
        assert_eq!(get(&invalid, STALLED).reason, "InvalidSpec");
    }

    #[test]
    fn a_rollout_without_progress_past_the_deadline_is_degraded() {
        let stuck = Rollout {
            ready_replicas: 0,
            ..SETTLED
        };
        let first = next_status(None, &observed(stuck.clone(), None), &time(1_000));
        assert_eq!(get(&first, PROGRESSING).reason, "RollingOut");
        let later = next_status(Some(&first), &observed(stuck.clone(), None), &time(1_500));
        assert_eq!(get(&later, PROGRESSING).status, "True", "within 10 minutes");
        let late = next_status(Some(&later), &observed(stuck.clone(), None), &time(1_601));
        assert_eq!(
            (
                get(&late, PROGRESSING).status.as_str(),
                get(&late, PROGRESSING).reason.as_str()
            ),
            ("False", "ProgressDeadlineExceeded")
        );
        assert_eq!(get(&late, DEGRADED).status, "True");
        assert!(get(&late, DEGRADED)
            .message
            .contains("no progress in 601 s"));
        // It stays so (no flapping) until the pods are ready, or a new generation.
        let still = next_status(Some(&late), &observed(stuck.clone(), None), &time(1_700));
        assert_eq!(get(&still, PROGRESSING).reason, "ProgressDeadlineExceeded");
        let recovered = next_status(Some(&still), &observed(SETTLED, None), &time(1_800));
        assert_eq!(get(&recovered, DEGRADED).status, "False");
        let edited = Observed {
            generation: Some(4),
            ..observed(stuck, None)
        };
        let restarted = next_status(Some(&still), &edited, &time(1_900));
        assert_eq!(get(&restarted, PROGRESSING).reason, "RollingOut");
        assert_eq!(
            get(&restarted, PROGRESSING).last_transition_time,
            time(1_900)
        );
    }

    #[test]
    fn last_change_says_what_the_generation_does_and_keeps_it() {
        let first = next_status(None, &observed(SETTLED, None), &time(100));
        let change = first.last_change.clone().unwrap();
        assert_eq!((change.generation, change.kind.as_str()), (3, "Initial"));
        // Generation 4 edits only a description: same definition.
        let edited = Observed {
            generation: Some(4),
            ..observed(SETTLED, None)
        };
        let second = next_status(Some(&first), &edited, &time(110));
        assert_eq!(second.last_change.as_ref().unwrap().kind, "ServingOnly");
        // Generation 5 changes the rows; it stays `Rebuild` after the switch, when
        // the new definition serves.
        let rebuilding = Observed {
            generation: Some(5),
            target: Some("b".into()),
            ..observed(SETTLED, None)
        };
        let third = next_status(Some(&second), &rebuilding, &time(120));
        assert_eq!(third.last_change.as_ref().unwrap().kind, "Rebuild");
        let switched = Observed {
            generation: Some(5),
            definition: Some("b".into()),
            target: Some("b".into()),
            ..observed(SETTLED, None)
        };
        let fourth = next_status(Some(&third), &switched, &time(130));
        assert_eq!(fourth.last_change, third.last_change);
        // An invalid spec keeps what the last valid one did.
        let invalid = Observed {
            generation: Some(6),
            target: None,
            ..observed(SETTLED, Some("bad"))
        };
        let fifth = next_status(Some(&fourth), &invalid, &time(140));
        assert_eq!(fifth.last_change, fourth.last_change);
    }

    fn get<'a>(status: &'a FrontendExperienceStatus, type_: &str) -> &'a Condition {
        status.conditions.iter().find(|c| c.type_ == type_).unwrap()
    }

    const SETTLED: Rollout = Rollout {
        generation: 2,
        observed_generation: 2,
        replicas: 2,
        ready_replicas: 2,
        updated_replicas: 2,
    };

    #[test]
    fn ready_when_every_replica_is_ready_and_updated() {
        let status = next_status(None, &observed(SETTLED, None), &time(100));
        assert_eq!(get(&status, READY).status, "True");
        assert_eq!(get(&status, PROGRESSING).status, "False");
        assert_eq!(status.observed_generation, Some(3));
        assert_eq!(status.ready_replicas, 2);
    }

    #[test]
    fn progressing_while_pods_catch_up() {
        let rollout = Rollout {
            ready_replicas: 1,
            ..SETTLED
        };
        let status = next_status(None, &observed(rollout, None), &time(100));
        assert_eq!(get(&status, READY).status, "False");
        assert_eq!(get(&status, READY).reason, "ReplicasNotReady");
        assert_eq!(get(&status, PROGRESSING).status, "True");
    }

    #[test]
    fn transition_time_kept_while_status_unchanged() {
        let first = next_status(None, &observed(SETTLED, None), &time(100));
        let second = next_status(Some(&first), &observed(SETTLED, None), &time(200));
        assert_eq!(get(&second, READY).last_transition_time, time(100));
        let third = next_status(
            Some(&second),
            &observed(
                Rollout {
                    ready_replicas: 0,
                    ..SETTLED
                },
                None,
            ),
            &time(300),
        );
        assert_eq!(get(&third, READY).last_transition_time, time(300));
    }

    #[test]
    fn ready_and_progressing_while_a_new_definition_rebuilds_beside() {
        let rebuild = Rebuild {
            definition: "b".into(),
            stateful_set: "web-b".into(),
            replicas: 2,
            ready_replicas: 1,
            partitions: 6,
            partitions_caught_up: 4,
            percent: 80,
        };
        let observed = Observed {
            rebuild: Some(rebuild.clone()),
            ..observed(SETTLED, None)
        };
        let status = next_status(None, &observed, &time(100));
        assert_eq!(get(&status, READY).status, "True", "the old pods serve");
        assert_eq!(get(&status, PROGRESSING).reason, "Rebuilding");
        assert!(
            get(&status, PROGRESSING)
                .message
                .contains("80% done, 4/6 partitions caught up, 1/2 new pods ready"),
            "{}",
            get(&status, PROGRESSING).message
        );
        assert_eq!(status.rebuild, Some(rebuild));
        assert_eq!(status.definition.as_deref(), Some("a"));
    }

    #[test]
    fn invalid_spec_keeps_ready_and_reports_the_compiler_message() {
        let good = next_status(None, &observed(SETTLED, None), &time(100));
        let bad = next_status(
            Some(&good),
            &observed(SETTLED, Some("spec.sources: is empty")),
            &time(200),
        );
        assert_eq!(get(&bad, SPEC_VALID).status, "False");
        assert_eq!(get(&bad, SPEC_VALID).message, "spec.sources: is empty");
        assert_eq!(get(&bad, READY).status, "True", "old pods keep serving");
        assert_eq!(get(&bad, DEGRADED).status, "True");
    }
}
