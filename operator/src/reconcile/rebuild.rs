//! Zero-downtime projection changes, decided as a pure function.
//!
//! Each projection definition (the hash of the sources and projections, as the
//! runtime stamps its store) runs in a StatefulSet of its own. When the definition
//! changes, the new StatefulSet replays the topics beside the one that serves; the
//! Service keeps selecting the serving pods until every new pod is ready (caught up
//! with the topics), then moves. The old StatefulSet is removed one reconcile
//! later, once the Service no longer selects it, so that connections have moved on.

use facet_bff::contract::ProgressReport;

/// Pod label: the projection definition a pod's store holds.
pub const DEFINITION_LABEL: &str = "facet.dev/definition";

/// One of the experience's StatefulSets as observed.
#[derive(Debug, Clone, PartialEq)]
pub struct SetState {
    pub name: String,
    /// `None` for a StatefulSet made before definitions had sets of their own.
    pub definition: Option<String>,
    /// Every replica is up to date and ready.
    pub settled: bool,
    /// `spec.replicas` as the set has it.
    pub replicas: i32,
}

/// What the apply phase does with the sets.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The definition the Service selects; `None` keeps the selector of a Service
    /// made before definitions (every pod of the experience).
    pub serve: Option<String>,
    /// A set left exactly as it is (neither applied nor swept): the one serving
    /// while its successor rebuilds, or until the Service has moved away from it.
    pub keep: Option<String>,
    /// The replicas the kept set has now (to resize it while it serves).
    pub kept_replicas: Option<i32>,
    pub phase: Phase,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Phase {
    /// The current definition serves; nothing else runs.
    Serving,
    /// The current definition replays beside `from`, which serves meanwhile.
    Rebuilding { from: Option<String> },
    /// The current definition has caught up and the Service moves to it now; the
    /// set of `from` goes at the next reconcile.
    Switching { from: Option<String> },
}

/// Decides which definition serves and which sets stay.
///
/// `service_selects` is the definition the live Service selects: `None` when
/// there is no Service yet, `Some(None)` for a Service without the label.
pub fn plan(target: &str, service_selects: Option<Option<&str>>, sets: &[SetState]) -> Plan {
    let serving = service_selects
        .and_then(|selected| sets.iter().find(|s| s.definition.as_deref() == selected));
    let current = Plan {
        serve: Some(target.to_string()),
        keep: None,
        kept_replicas: None,
        phase: Phase::Serving,
    };
    let Some(old) = serving else {
        // Nothing serves (a new experience, or the serving set was deleted): there
        // is nothing to wait beside.
        return current;
    };
    if old.definition.as_deref() == Some(target) {
        return current;
    }
    let from = old.definition.clone();
    let caught_up = sets
        .iter()
        .any(|s| s.definition.as_deref() == Some(target) && s.settled);
    match caught_up {
        true => Plan {
            keep: Some(old.name.clone()),
            kept_replicas: Some(old.replicas),
            phase: Phase::Switching { from },
            ..current
        },
        false => Plan {
            serve: old.definition.clone(),
            keep: Some(old.name.clone()),
            kept_replicas: Some(old.replicas),
            phase: Phase::Rebuilding { from },
        },
    }
}

/// How far a rebuild is, from what each new pod's `/readyz` said (`None`: no
/// answer yet). The slowest pod counts: the Service moves when all have caught up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Progress {
    /// Source partitions each pod replays.
    pub partitions: usize,
    /// Partitions the slowest pod has caught up with.
    pub caught_up: usize,
    /// How far the slowest pod is, in percent.
    pub percent: u8,
}

pub fn progress(reports: &[Option<ProgressReport>]) -> Progress {
    let partitions = reports
        .iter()
        .flatten()
        .map(|r| r.partitions.len())
        .max()
        .unwrap_or(0);
    let slowest = |measure: &dyn Fn(&ProgressReport) -> usize| {
        reports
            .iter()
            .map(|r| r.as_ref().map(measure).unwrap_or(0))
            .min()
            .unwrap_or(0)
    };
    Progress {
        partitions,
        caught_up: slowest(&|r| r.caught_up()),
        percent: slowest(&|r| usize::from(r.percent())) as u8,
    }
}

/// What applying a spec does to the running pods, for the `Applied` Event and
/// `status.lastChange`: `serving` is the definition the serving pods hold,
/// `target` the spec's. Returns the kind and a sentence for people.
pub fn change_note(serving: Option<&str>, target: &str) -> (&'static str, &'static str) {
    match serving {
        None => ("Initial", "the pods build their stores from the topics"),
        Some(serving) if serving == target => (
            "ServingOnly",
            "the projection definition is unchanged: pods that need the new settings restart on their stores, nothing is replayed and clients keep their positions",
        ),
        Some(_) => (
            "Rebuild",
            "the projection definition changed: a new StatefulSet replays the topics beside the serving pods, and the Service moves to it once it has caught up",
        ),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_applied_note_says_whether_anything_replays() {
        let (kind, note) = super::change_note(Some("abc"), "abc");
        assert_eq!(kind, "ServingOnly");
        assert!(note.contains("nothing is replayed"));
        let (kind, note) = super::change_note(Some("abc"), "def");
        assert_eq!(kind, "Rebuild");
        assert!(note.contains("replays the topics"));
        let (kind, note) = super::change_note(None, "def");
        assert_eq!(kind, "Initial");
        assert!(note.contains("build their stores"));
    }

    use super::*;

    fn set(name: &str, definition: Option<&str>, settled: bool) -> SetState {
        SetState {
            name: name.into(),
            definition: definition.map(String::from),
            settled,
            replicas: 1,
        }
    }

    #[test]
    fn a_new_experience_serves_its_definition_at_once() {
        let plan = plan("b", None, &[]);
        assert_eq!(plan.serve.as_deref(), Some("b"));
        assert_eq!((plan.keep, plan.phase), (None, Phase::Serving));
    }

    #[test]
    fn a_changed_definition_rebuilds_beside_the_serving_set_then_takes_over() {
        let serving = set("web-a", Some("a"), true);
        let rebuilding = plan(
            "b",
            Some(Some("a")),
            &[serving.clone(), set("web-b", Some("b"), false)],
        );
        assert_eq!(rebuilding.serve.as_deref(), Some("a"), "the Service stays");
        assert_eq!(rebuilding.keep.as_deref(), Some("web-a"));
        assert_eq!(
            rebuilding.phase,
            Phase::Rebuilding {
                from: Some("a".into())
            }
        );

        let caught_up = [serving.clone(), set("web-b", Some("b"), true)];
        let switching = plan("b", Some(Some("a")), &caught_up);
        assert_eq!(switching.serve.as_deref(), Some("b"), "the Service moves");
        assert_eq!(
            switching.keep.as_deref(),
            Some("web-a"),
            "kept one more round"
        );
        assert_eq!(
            switching.phase,
            Phase::Switching {
                from: Some("a".into())
            }
        );

        let moved = plan("b", Some(Some("b")), &caught_up);
        assert_eq!(
            (moved.keep, moved.phase),
            (None, Phase::Serving),
            "now swept"
        );
    }

    #[test]
    fn a_third_definition_replaces_the_one_still_rebuilding() {
        let sets = [
            set("web-a", Some("a"), true),
            set("web-b", Some("b"), false),
        ];
        let plan = plan("c", Some(Some("a")), &sets);
        assert_eq!(
            plan.keep.as_deref(),
            Some("web-a"),
            "web-b is not kept: swept"
        );
        assert_eq!(plan.serve.as_deref(), Some("a"));
    }

    #[test]
    fn going_back_to_the_serving_definition_drops_the_rebuild() {
        let sets = [
            set("web-a", Some("a"), true),
            set("web-b", Some("b"), false),
        ];
        assert_eq!(plan("a", Some(Some("a")), &sets).phase, Phase::Serving);
    }

    #[test]
    fn a_set_from_before_definitions_serves_until_its_successor_caught_up() {
        let sets = [set("web", None, true), set("web-b", Some("b"), false)];
        let plan = plan("b", Some(None), &sets);
        assert_eq!(plan.serve, None, "the old selector stays");
        assert_eq!(plan.keep.as_deref(), Some("web"));
        assert_eq!(plan.phase, Phase::Rebuilding { from: None });
    }

    #[test]
    fn when_the_serving_set_is_gone_the_current_definition_serves() {
        let sets = [set("web-b", Some("b"), false)];
        assert_eq!(plan("b", Some(Some("a")), &sets).phase, Phase::Serving);
    }
}

#[cfg(test)]
mod progress_tests {
    use super::*;
    use facet_bff::contract::PartitionReport;

    fn report(positions: &[(i64, i64)]) -> ProgressReport {
        ProgressReport {
            started: true,
            partitions: positions
                .iter()
                .enumerate()
                .map(|(i, (position, target))| PartitionReport {
                    topic: "t".into(),
                    partition: i as i32,
                    start: 0,
                    position: *position,
                    target: *target,
                })
                .collect(),
            ..ProgressReport::default()
        }
    }

    #[test]
    fn the_slowest_pod_is_the_progress() {
        let fast = report(&[(100, 100), (80, 100)]);
        let slow = report(&[(50, 100), (10, 100)]);
        let slowest = progress(&[Some(fast.clone()), Some(slow)]);
        assert_eq!(
            slowest,
            Progress {
                partitions: 2,
                caught_up: 0,
                percent: 30
            }
        );
        let one_silent = progress(&[Some(fast), None]);
        assert_eq!(
            one_silent,
            Progress {
                partitions: 2,
                caught_up: 0,
                percent: 0
            }
        );
    }
}
