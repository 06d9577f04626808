//! The controller: read → validate (the runtime's own compiler) → build (pure) →
//! apply (server-side apply, one field manager) → status. It never writes `spec`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{finalizer, Event as Finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{watcher, Controller};
use kube::{Api, Client, Resource, ResourceExt};
use tracing::{info, warn};

use super::builders::{self, BuildConfig, BuildError};
use super::children::{scoped, Children};
use super::cleanup;
use super::progress::NotReady;
use super::rebuild::{Phase, Plan};
use super::status::{self, Observed, Rollout, APPLY_FAILED, DEGRADED, SPEC_VALID};
use super::survey::Survey;
use crate::api::FrontendExperience;
use crate::metrics::OperatorMetrics;

pub use super::apply::FIELD_MANAGER;
pub use super::error::Error;

pub struct Context {
    pub client: Client,
    pub build: BuildConfig,
    /// Delete the experience's consumer groups when it is deleted (adds a finalizer).
    pub delete_consumer_groups: bool,
    pub recorder: Recorder,
    pub metrics: Arc<OperatorMetrics>,
    pub announced: Announced,
    /// Ask the brokers about the source topics' retention (the `Replayable` condition).
    pub check_retention: bool,
    /// What a tenant's spec may ask for (images, service accounts, Kafka servers).
    pub tenancy: super::policy::TenancyPolicy,
    /// Retention verdicts recently judged from the serving pods' reports.
    pub retention_checks: super::retention::RetentionChecks,
    /// Whether this replica leads (always, without leader election).
    pub leadership: crate::leader::Leadership,
    /// What was last applied to each child, so that an unchanged one is not again.
    pub applied: super::apply::Applied,
    /// (experience uid, definition) whose groups are being deleted after a switch.
    pub replaced_groups: std::sync::Mutex<std::collections::HashSet<(String, String)>>,
}

/// The generation of each experience (by uid) last announced with an `Applied`
/// Event. The status alone cannot tell: the watch cache may hand the next reconcile
/// the object as it was before the last status patch.
#[derive(Default)]
pub struct Announced(std::sync::Mutex<std::collections::HashMap<String, i64>>);

impl Announced {
    /// True only the first time `generation` of the object `uid` comes by.
    pub fn first_time(&self, uid: &str, generation: i64) -> bool {
        let mut announced = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if announced.get(uid).is_some_and(|g| *g >= generation) {
            return false;
        }
        announced.insert(uid.to_string(), generation);
        true
    }

    /// Forgets a deleted object (seen only when a finalizer holds it; without one
    /// an entry stays until the operator restarts, a few bytes per deleted object).
    pub fn forget(&self, uid: &str) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(uid);
    }
}

impl Context {
    pub fn new(
        client: Client,
        build: BuildConfig,
        delete_consumer_groups: bool,
        metrics: Arc<OperatorMetrics>,
    ) -> Self {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: FIELD_MANAGER.into(),
                instance: std::env::var("POD_NAME").ok(),
            },
        );
        Context {
            client,
            build,
            delete_consumer_groups,
            recorder,
            metrics,
            announced: Announced::default(),
            check_retention: true,
            leadership: crate::leader::Leadership::unconditional(),
            tenancy: Default::default(),
            retention_checks: Default::default(),
            replaced_groups: Default::default(),
            applied: Default::default(),
        }
    }
}

/// What one controller's reconciles share: the operator's context and the caches
/// of the children in the controller's namespace (or all of them).
pub struct Scope {
    pub context: Arc<Context>,
    pub children: Children,
}

/// Watches experiences in `namespaces` (all of them when empty) until a signal.
pub async fn run(context: Arc<Context>, namespaces: Vec<String>) {
    let scopes: Vec<Option<String>> = if namespaces.is_empty() {
        vec![None]
    } else {
        namespaces.into_iter().map(Some).collect()
    };
    let controllers = scopes.into_iter().map(|namespace| {
        let client = context.client.clone();
        let ns = namespace.as_deref();
        let (children, watches) = Children::watch(&client, ns);
        let scope = Arc::new(Scope {
            context: context.clone(),
            children,
        });
        Controller::new(
            scoped::<FrontendExperience>(&client, ns),
            watcher::Config::default(),
        )
        // A child changed, made or deleted by hand wakes its experience at once
        // (a budget or policy deleted by hand comes back, not at the requeue).
        .owns_stream(watches.stateful_sets)
        .owns_stream(watches.config_maps)
        .owns_stream(watches.services)
        .owns_stream(watches.budgets)
        .owns_stream(watches.policies)
        .watches_stream(watches.pods, |pod| {
            let experience = pod.labels().get(builders::INSTANCE_LABEL)?;
            Some(ObjectRef::new(experience).within(&pod.namespace()?))
        })
        .shutdown_on_signal()
        .run(reconcile, error_policy, scope)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(object = %object.name, "reconciled"),
                Err(e) => tracing::debug!(error = %e, "reconcile did not complete"),
            }
        })
    });
    futures::future::join_all(controllers).await;
}

fn error_policy(fx: Arc<FrontendExperience>, error: &Error, scope: Arc<Scope>) -> Action {
    scope.context.metrics.failure(error.kind());
    warn!(experience = %fx.name_any(), namespace = ?fx.namespace(), error = %error, "reconcile failed; retrying");
    Action::requeue(Duration::from_secs(10))
}

/// Reconciles one experience (public for the tests that check its exact API calls).
pub async fn reconcile(fx: Arc<FrontendExperience>, scope: Arc<Scope>) -> Result<Action, Error> {
    let (context, children) = (&scope.context, &scope.children);
    // Before anything is written: a leader that slept past its renew deadline
    // (and may have been replaced) must not act on what it wakes up to.
    if !context.leadership.held() {
        return Err(Error::NotLeading);
    }
    let started = Instant::now();
    context.metrics.reconciles.inc();
    let result = if context.delete_consumer_groups {
        let namespace = fx.namespace().unwrap_or_default();
        let api: Api<FrontendExperience> = Api::namespaced(context.client.clone(), &namespace);
        finalizer(&api, cleanup::FINALIZER, fx, |event| async {
            match event {
                Finalizer::Apply(fx) => reconcile_inner(&fx, context, children).await,
                Finalizer::Cleanup(fx) => {
                    cleanup::delete_consumer_groups(&context.client, &fx).await?;
                    let uid = fx.meta().uid.as_deref().unwrap_or_default();
                    context.announced.forget(uid);
                    context.retention_checks.forget(uid);
                    context.applied.forget(uid);
                    Ok(Action::await_change())
                }
            }
        })
        .await
        .map_err(|e| Error::Finalizer(e.to_string()))
    } else {
        reconcile_inner(&fx, context, children).await
    };
    context
        .metrics
        .duration
        .observe(started.elapsed().as_secs_f64());
    result
}

/// How often a rebuild's progress is read into the status.
const REBUILD_POLL: Duration = Duration::from_secs(5);
/// How often a serving set whose running pods are not ready is asked again.
const UNSETTLED_POLL: Duration = Duration::from_secs(10);

/// One reconcile, in phases: validate (the runtime's own compiler), survey (which
/// definition serves) and plan (pure), build (pure), apply (every child, then the
/// orphan sweep), observe (the rollout, a rebuild's progress, retention), status.
async fn reconcile_inner(
    fx: &FrontendExperience,
    context: &Arc<Context>,
    children: &Children,
) -> Result<Action, Error> {
    let namespace = fx.namespace().ok_or(BuildError::Missing("namespace"))?;
    let mut spec_error = validate(fx, context).await;
    children.ready().await;
    let survey = Survey::take(children, fx, &namespace);
    let mut desired = None;
    if spec_error.is_none() {
        let plan = survey.plan(&builders::definition(&fx.spec.experience));
        let built = builders::desired(fx, &context.build, &plan)?;
        match survey.storage_change(&built.stateful_set) {
            Some(refusal) => spec_error = Some(report_invalid_spec(context, fx, refusal).await),
            None => desired = Some((plan, built)),
        }
    }
    let plan = match desired {
        None => None,
        Some((plan, desired)) => {
            if let Err(error) =
                super::apply::apply_all(&context.client, fx, &desired, &context.applied, children)
                    .await
            {
                report_apply_failure(context, fx, &namespace, &plan, &survey, &error).await;
                return Err(error);
            }
            announce_generation(fx, context).await;
            if let Phase::Switching { from } = &plan.phase {
                let note = format!(
                    "the new projection definition {} has caught up: the Service moved to its pods; those of {} are removed next",
                    plan.serve.as_deref().unwrap_or_default(),
                    from.as_deref().unwrap_or("the previous spec"),
                );
                publish(context, fx, EventType::Normal, "Switched", "Switch", note).await;
                if let (true, Some(replaced)) = (context.delete_consumer_groups, from.as_deref()) {
                    delete_groups_of_replaced(context, fx, replaced);
                }
            }
            Some(plan)
        }
    };
    let observed = observe(context, fx, &namespace, spec_error, plan.as_ref(), &survey).await?;
    write_status(&context.client, fx, &namespace, &observed).await?;
    // Ready pods that have not yet said what the brokers keep (their first answer
    // comes soon after they start): ask again soon. Pods that never run are not
    // asked on a timer; their becoming ready reconciles anyway.
    let retention_due = context.check_retention
        && observed.retention.is_none()
        && observed
            .rollout
            .as_ref()
            .is_some_and(|r| r.settled(observed.desired_replicas));
    Ok(match plan.map(|p| p.phase) {
        // Nothing will change until the spec does: no retry loop.
        None => Action::await_change(),
        Some(Phase::Serving) if retention_due => Action::requeue(Duration::from_secs(30)),
        // Running pods that are not ready change their report (Kafka refused, then
        // reached; a replay under way) while no object changes: ask again soon. Pods
        // that never run are not asked on a timer; a pod that starts running wakes
        // the controller through the pod watch.
        Some(Phase::Serving) if observed.pods.running => Action::requeue(UNSETTLED_POLL),
        Some(Phase::Serving) => Action::requeue(Duration::from_secs(300)),
        // Progress to report, or the old set to remove once the Service has moved.
        Some(Phase::Rebuilding { .. } | Phase::Switching { .. }) => Action::requeue(REBUILD_POLL),
    })
}

/// A child the API server refused: `Degraded=True` (reason `ApplyFailed`, with the
/// API server's message) and a Warning Event once per distinct message, so that a
/// change that cannot be applied does not fail in the operator's log alone. The
/// reconcile then fails and is retried.
async fn report_apply_failure(
    context: &Context,
    fx: &FrontendExperience,
    namespace: &str,
    plan: &Plan,
    survey: &Survey,
    error: &Error,
) {
    let message = error.to_string();
    let already_reported = fx
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == DEGRADED))
        .is_some_and(|c| c.reason == APPLY_FAILED && c.message == message);
    if !already_reported {
        publish(
            context,
            fx,
            EventType::Warning,
            APPLY_FAILED,
            "Apply",
            message.clone(),
        )
        .await;
    }
    match observe(context, fx, namespace, None, Some(plan), survey).await {
        Ok(mut observed) => {
            observed.apply_error = Some(message);
            if let Err(e) = write_status(&context.client, fx, namespace, &observed).await {
                warn!(experience = %fx.name_any(), error = %e, "writing the status of a refused apply");
            }
        }
        Err(e) => warn!(experience = %fx.name_any(), error = %e, "observing after a refused apply"),
    }
}

/// The spec's problems, if any: what the compiler refuses, else what the tenancy
/// policy does not allow. Reported once per distinct message as a Warning Event.
/// Running pods are left alone while the spec is invalid, and none is made.
async fn validate(fx: &FrontendExperience, context: &Context) -> Option<String> {
    let spec = &fx.spec.experience;
    let error = match facet_bff::spec::compile(spec) {
        Err(e) => e.summary(),
        Ok(_) => {
            let broken = super::policy::violations(spec, &context.build.image, &context.tenancy);
            if broken.is_empty() {
                return None;
            }
            broken.join("; ")
        }
    };
    Some(report_invalid_spec(context, fx, error).await)
}

/// A spec that cannot run: a warning and an `InvalidSpec` Event once per message
/// (the status then says `SpecValid=False`); running pods are left alone.
async fn report_invalid_spec(context: &Context, fx: &FrontendExperience, error: String) -> String {
    let already_reported = fx
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == SPEC_VALID))
        .is_some_and(|c| c.status == "False" && c.message == error);
    if !already_reported {
        warn!(experience = %fx.name_any(), namespace = ?fx.namespace(), %error, "invalid spec; running pods are left alone");
        publish(
            context,
            fx,
            EventType::Warning,
            "InvalidSpec",
            "Validate",
            error.clone(),
        )
        .await;
    }
    error
}

/// An `Applied` Event, once per generation.
async fn announce_generation(fx: &FrontendExperience, context: &Context) {
    let generation = fx.meta().generation.unwrap_or(0);
    let new_generation = fx.status.as_ref().and_then(|s| s.observed_generation)
        != fx.meta().generation
        && context
            .announced
            .first_time(fx.meta().uid.as_deref().unwrap_or_default(), generation);
    if new_generation {
        info!(experience = %fx.name_any(), namespace = ?fx.namespace(), generation, "applied");
        let serving = fx.status.as_ref().and_then(|s| s.definition.as_deref());
        let (_, change) =
            super::rebuild::change_note(serving, &builders::definition(&fx.spec.experience));
        let note = format!(
            "applied generation {generation} ({} replicas): {change}",
            fx.spec.experience.replicas
        );
        publish(context, fx, EventType::Normal, "Applied", "Apply", note).await;
    }
}

/// Deletes the groups of a replaced definition in the background, once its pods
/// are gone (they drain first); once per switch, however often it reconciles.
fn delete_groups_of_replaced(context: &Arc<Context>, fx: &FrontendExperience, replaced: &str) {
    let job = (fx.uid().unwrap_or_default(), replaced.to_string());
    let mut running = context
        .replaced_groups
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if !running.insert(job.clone()) {
        return;
    }
    let (context, fx) = (context.clone(), fx.clone());
    tokio::spawn(async move {
        let result = cleanup::delete_groups_of_replaced(&context.client, &fx, &job.1).await;
        if let Err(error) = result {
            warn!(experience = %fx.name_any(), replaced = %job.1, %error, "the replaced definition's consumer groups are left on the brokers");
        }
        let mut running = context
            .replaced_groups
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        running.remove(&job);
    });
}

/// The consumer groups of the serving pods, then of the pods rebuilding beside
/// them (each definition has its own).
fn consumer_groups(
    namespace: &str,
    name: &str,
    serving: Option<&str>,
    plan: Option<&Plan>,
    spec: &facet_bff::spec::ExperienceSpec,
) -> Vec<String> {
    let rebuilding = match plan.map(|p| &p.phase) {
        Some(Phase::Rebuilding { .. }) => Some(builders::definition(spec)),
        _ => None,
    };
    serving
        .into_iter()
        .chain(rebuilding.as_deref())
        .flat_map(|definition| {
            builders::consumer_groups(namespace, name, definition, spec.replicas)
        })
        .collect()
}

/// What the status reports: the spec's validity, the serving pods' rollout, a
/// rebuild's progress and (when asked for) the source topics' retention.
/// Without a plan (an invalid spec) it reports on what serves as it is.
async fn observe(
    context: &Context,
    fx: &FrontendExperience,
    namespace: &str,
    spec_error: Option<String>,
    plan: Option<&Plan>,
    survey: &Survey,
) -> Result<Observed, Error> {
    let name = fx.name_any();
    let spec = &fx.spec.experience;
    let statefulsets: Api<StatefulSet> = Api::namespaced(context.client.clone(), namespace);
    let serving = match plan {
        Some(plan) => plan.serve.clone(),
        None => survey.service_selects.clone().flatten(),
    };
    let serving_set = match &serving {
        Some(definition) => builders::set_name(&name, definition),
        None => name.clone(), // the set from before definitions
    };
    let serving_sts = statefulsets
        .get_opt(&serving_set)
        .await
        .map_err(Error::Observe)?;
    let rebuild = match plan.map(|p| &p.phase) {
        Some(Phase::Rebuilding { .. } | Phase::Switching { .. }) => {
            let definition = builders::definition(spec);
            let set = builders::set_name(&name, &definition);
            // Once the Service has moved (switching), the new set is the serving
            // one, already read.
            let new_sts = match set == serving_set {
                true => serving_sts.clone(),
                false => statefulsets.get_opt(&set).await.map_err(Error::Observe)?,
            };
            let replicas = spec.replicas;
            let new = super::progress::NewSet {
                definition,
                name: set,
                replicas,
            };
            Some(super::progress::rebuild(&context.client, namespace, new, new_sts.as_ref()).await)
        }
        _ => None,
    };
    let rollout = serving_sts.as_ref().map(Rollout::of);
    let desired_replicas = serving_sts
        .as_ref()
        .and_then(|sts| sts.spec.as_ref()?.replicas)
        .unwrap_or(spec.replicas);
    // Pods that do not become ready say why on /readyz (Kafka refused the login, a
    // topic is missing): asked only while a rollout is not settled.
    let not_ready = match (&rollout, &rebuild, spec_error.is_none()) {
        (Some(rollout), None, true) if !rollout.settled(desired_replicas) => {
            super::progress::why_not_ready(
                &context.client,
                namespace,
                &serving_set,
                desired_replicas,
            )
            .await
        }
        _ => NotReady::default(),
    };
    Ok(Observed {
        generation: fx.meta().generation,
        desired_replicas,
        spec_error,
        rollout,
        pods: not_ready,
        definition: serving.clone(),
        rebuild,
        target: plan.map(|_| builders::definition(spec)),
        apply_error: None,
        progress_deadline: context.build.progress_deadline,
        consumer_groups: consumer_groups(namespace, &name, serving.as_deref(), plan, spec),
        endpoints: builders::endpoints(namespace, &name, spec),
        selector: builders::selector_text(&builders::definition_selector(
            &name,
            serving.as_deref(),
        )),
        retention: match context.check_retention {
            true => recent_retention(context, fx, namespace, &serving_set).await,
            false => None,
        },
    })
}

/// The retention verdict, reused while recent (see `RetentionChecks`).
async fn recent_retention(
    context: &Context,
    fx: &FrontendExperience,
    namespace: &str,
    serving_set: &str,
) -> Option<Result<(), String>> {
    let uid = fx.meta().uid.as_deref().unwrap_or_default();
    let generation = fx.meta().generation.unwrap_or(0);
    let now = Instant::now();
    if let Some(verdict) = context.retention_checks.recent(uid, generation, now) {
        return Some(verdict);
    }
    let verdict = check_retention(&context.client, namespace, serving_set).await?;
    context
        .retention_checks
        .remember(uid, generation, now, verdict.clone());
    Some(verdict)
}

/// The retention verdict for the source topics from what a serving pod's Kafka
/// client was told (its readiness report), or `None` while no pod has said: the
/// condition then keeps what was last known. The pods hold the credentials, so
/// the operator reads no Secret and opens no Kafka client for this.
async fn check_retention(
    client: &Client,
    namespace: &str,
    serving_set: &str,
) -> Option<Result<(), String>> {
    let pod = format!("{serving_set}-0");
    let report = super::progress::report(client, namespace, &pod).await;
    match report.and_then(|r| r.retention) {
        Some(found) => Some(super::retention::judge(&found)),
        None => {
            tracing::debug!(%pod, "no retention report yet");
            None
        }
    }
}

/// Patches `status` when it differs from what is observed.
async fn write_status(
    client: &Client,
    fx: &FrontendExperience,
    namespace: &str,
    observed: &Observed,
) -> Result<(), Error> {
    let next = status::next_status(
        fx.status.as_ref(),
        observed,
        &Time(k8s_openapi::jiff::Timestamp::now()),
    );
    if fx.status.as_ref() == Some(&next) {
        return Ok(());
    }
    let experiences: Api<FrontendExperience> = Api::namespaced(client.clone(), namespace);
    // Never `status: null`: a status that cannot be written is an error.
    let mut status =
        serde_json::to_value(&next).map_err(|e| Error::Status(kube::Error::SerdeError(e)))?;
    // A merge patch keeps what it does not name: a finished rebuild goes by name.
    if next.rebuild.is_none() {
        status["rebuild"] = serde_json::Value::Null;
    }
    let patch = serde_json::json!({ "status": status });
    experiences
        .patch_status(
            &fx.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .map_err(Error::Status)?;
    Ok(())
}

async fn publish(
    context: &Context,
    fx: &FrontendExperience,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: action.into(),
        secondary: None,
    };
    // Events are informational: failing to record one must not fail the reconcile.
    if let Err(e) = context.recorder.publish(&event, &fx.object_ref(&())).await {
        warn!(error = %e, "could not record an event");
    }
}

#[cfg(test)]
mod tests {
    use super::Announced;

    #[test]
    fn each_generation_is_announced_once_per_object() {
        let announced = Announced::default();
        assert!(announced.first_time("uid-a", 1));
        assert!(
            !announced.first_time("uid-a", 1),
            "a stale cache replays generation 1"
        );
        assert!(announced.first_time("uid-b", 1), "another object");
        assert!(announced.first_time("uid-a", 2));
        assert!(!announced.first_time("uid-a", 1), "an older generation");
        announced.forget("uid-a");
        assert!(announced.first_time("uid-a", 2));
    }
}
