//! The exact API calls one reconcile makes, without a cluster: the client talks to
//! a mocked API server (tower-test) that checks each request's method and path in
//! order and answers it; what the operator's watches have seen of the children is
//! put in its caches instead (`seen`), since a reconcile reads them there.

use std::sync::Arc;

use facet_operator::api::{FrontendExperience, FrontendExperienceSpec};
use facet_operator::metrics::OperatorMetrics;
use facet_operator::reconcile::builders::{definition, set_name, BuildConfig, NetworkPolicyConfig};
use facet_operator::reconcile::children::Children;
use facet_operator::reconcile::controller::{reconcile, Context, Error, Scope};
use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher;
use kube::Client;
use serde_json::{json, Value};

const UID: &str = "0b7c2f0e-1111-4a4a-9999-000000000001";

fn storefront(replicas: i32) -> FrontendExperience {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../config/samples/storefront.yaml"
    );
    let mut manifest = facet_bff::spec::parse_manifests(&std::fs::read_to_string(path).unwrap())
        .remove(0)
        .unwrap();
    manifest.spec.replicas = replicas;
    let mut fx = FrontendExperience::new(
        &manifest.name,
        FrontendExperienceSpec {
            experience: manifest.spec,
        },
    );
    fx.metadata.namespace = manifest.namespace;
    fx.metadata.uid = Some(UID.into());
    fx.metadata.generation = Some(3);
    fx
}

/// One expected request and the answer the mocked API server gives it.
struct Call {
    method: Method,
    /// The path, and the query when it matters (`?` included).
    path: &'static str,
    status: StatusCode,
    answer: Value,
    /// Not a request: what the operator's watches have seen (its answer, or the
    /// items of its list), read from the caches instead of the API server.
    seen: bool,
}

fn call(method: Method, path: &'static str, answer: Value) -> Call {
    Call {
        method,
        path,
        status: StatusCode::OK,
        answer,
        seen: false,
    }
}

/// What a watch has seen, in place of a request (see [`Call::seen`]).
fn seen(call: Call) -> Call {
    Call { seen: true, ..call }
}

/// An object as the API server returns it.
fn object(kind: &str, api_version: &str, name: &str) -> Value {
    json!({"apiVersion": api_version, "kind": kind,
           "metadata": {"name": name, "namespace": "shop", "uid": format!("uid-{name}"),
                        "resourceVersion": "7", "generation": 1}})
}

/// A list of children owned by the experience (or, with `owner: false`, only labelled alike).
fn owned_list(kind: &str, api_version: &str, names: &[(&str, bool)]) -> Value {
    let items: Vec<Value> = names
        .iter()
        .map(|(name, owned)| {
            let owner = match owned {
                true => UID,
                false => "someone-else",
            };
            json!({"apiVersion": api_version, "kind": kind, "metadata": {
                "name": name, "namespace": "shop", "resourceVersion": "7", "generation": 1,
                "labels": {"app.kubernetes.io/instance": "storefront-web",
                           "app.kubernetes.io/managed-by": "facet-operator"},
                "ownerReferences": [{"apiVersion": "facet.dev/v1alpha1", "kind": "FrontendExperience",
                                     "name": "storefront-web", "uid": owner}]}})
        })
        .collect();
    json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList",
           "metadata": {"resourceVersion": "1"}, "items": items})
}

/// One definition's StatefulSet as the API server lists it, with one replica
/// that is ready (caught up) or not.
fn set(definition: Option<&str>, ready: bool) -> Value {
    let name = match definition {
        Some(d) => set_name("storefront-web", d),
        None => "storefront-web".into(),
    };
    let mut labels = json!({"app.kubernetes.io/instance": "storefront-web",
                            "app.kubernetes.io/managed-by": "facet-operator"});
    if let Some(d) = definition {
        labels["facet.dev/definition"] = json!(d);
    }
    json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {
        "name": name, "namespace": "shop", "generation": 1, "labels": labels,
        "ownerReferences": [{"apiVersion": "facet.dev/v1alpha1", "kind": "FrontendExperience",
                             "name": "storefront-web", "uid": UID}]},
        // The sample's store volume, with what the API server adds to a template.
        "spec": {"replicas": 1, "selector": {}, "serviceName": "x", "template": {},
                 "volumeClaimTemplates": [{"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                     "metadata": {"name": "data"}, "status": {"phase": "Pending"},
                     "spec": {"accessModes": ["ReadWriteOnce"], "volumeMode": "Filesystem",
                              "resources": {"requests": {"storage": "1Gi"}}}}]},
        "status": {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1,
                   "readyReplicas": if ready { 1 } else { 0 }}})
}

fn set_list(items: Vec<Value>) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "StatefulSetList", "metadata": {}, "items": items})
}

/// The Service as it is, selecting `definition`'s pods (or, with `None`, any pod).
fn service_selecting(definition: Option<&str>) -> Value {
    let mut selector = json!({"app.kubernetes.io/instance": "storefront-web"});
    if let Some(d) = definition {
        selector["facet.dev/definition"] = json!(d);
    }
    let mut service = owned_list("Service", "v1", &[("storefront-web", true)])["items"][0].take();
    service["spec"] = json!({"selector": selector});
    service
}

/// A pod's internal `/readyz` on a local port, answering `status` and `report`.
async fn readyz(status: StatusCode, report: Value) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = axum::Router::new().route(
        "/readyz",
        axum::routing::get(move || {
            let report = report.clone();
            async move { (status, axum::Json(report)) }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    port
}

/// The GET of a rebuilding pod, answered with its IP and internal `metrics` port
/// (the public `/readyz` on `http` gives no report).
fn pod(name: &str, metrics_port: u16) -> Call {
    call(
        Method::GET,
        leak(format!("/api/v1/namespaces/shop/pods/{name}")),
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": name, "namespace": "shop"},
               "spec": {"containers": [{"name": "bff", "ports": [
                   {"name": "http", "containerPort": 1},
                   {"name": "metrics", "containerPort": metrics_port}]}]},
               "status": {"podIP": "127.0.0.1"}}),
    )
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

const SELECTOR: &str = "?&labelSelector=app.kubernetes.io%2Finstance%3Dstorefront-web%2Capp.kubernetes.io%2Fmanaged-by%3Dfacet-operator";
const CM: &str = "/api/v1/namespaces/shop/configmaps";
const SVC: &str = "/api/v1/namespaces/shop/services";
const STS: &str = "/apis/apps/v1/namespaces/shop/statefulsets";
const PDB: &str = "/apis/policy/v1/namespaces/shop/poddisruptionbudgets";
const NETPOL: &str = "/apis/networking.k8s.io/v1/namespaces/shop/networkpolicies";
const STATUS: &str =
    "/apis/facet.dev/v1alpha1/namespaces/shop/frontendexperiences/storefront-web/status";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/shop/events";
const SECRETS: &str = "/api/v1/namespaces/shop/secrets";

/// The peer token Secret is created when there is none (`exists: false`) and
/// left alone when there is: a 409 is not an error.
fn peer_token(exists: bool) -> Call {
    match exists {
        false => call(
            Method::POST,
            SECRETS,
            object("Secret", "v1", "storefront-web-peer-token"),
        ),
        true => Call {
            status: StatusCode::CONFLICT,
            ..call(
                Method::POST,
                SECRETS,
                json!({"apiVersion": "v1", "kind": "Status", "status": "Failure",
                       "message": "already exists", "reason": "AlreadyExists", "code": 409}),
            )
        },
    }
}

fn event() -> Value {
    json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e"}, "eventTime": null})
}

/// What the watches have seen of the sets and the Service before the reconcile.
fn survey(sets: Vec<Value>, service: Option<Value>) -> Vec<Call> {
    let mut seen_before = vec![seen(call(Method::GET, STS, set_list(sets)))];
    seen_before.extend(service.map(|service| seen(call(Method::GET, SVC, service))));
    seen_before
}

/// The applies of a one-replica storefront whose definition is `current`.
fn applies(current: &str) -> Vec<Call> {
    let set = set_name("storefront-web", current);
    vec![
        call(
            Method::PATCH,
            leak(format!("{CM}/{set}-spec{APPLY}")),
            object("ConfigMap", "v1", "x"),
        ),
        call(
            Method::PATCH,
            leak(format!("{SVC}/storefront-web{APPLY}")),
            object("Service", "v1", "x"),
        ),
        call(
            Method::PATCH,
            leak(format!("{SVC}/storefront-web-headless{APPLY}")),
            object("Service", "v1", "x"),
        ),
        call(
            Method::PATCH,
            leak(format!("{STS}/{set}{APPLY}")),
            object("StatefulSet", "apps/v1", "x"),
        ),
        call(
            Method::PATCH,
            leak(format!("{NETPOL}/storefront-web{APPLY}")),
            object("NetworkPolicy", "networking.k8s.io/v1", "x"),
        ),
    ]
}

/// The sweep's list of NetworkPolicies: the experience's own.
fn network_policies() -> Call {
    call(
        Method::GET,
        leak(format!("{NETPOL}{SELECTOR}")),
        owned_list(
            "NetworkPolicy",
            "networking.k8s.io/v1",
            &[("storefront-web", true)],
        ),
    )
}

/// Names listed as owned by the experience.
fn owned<'a>(names: &[&'a str]) -> Vec<(&'a str, bool)> {
    names.iter().map(|name| (*name, true)).collect()
}

/// What the watches have seen of the experience's other children: each kind's
/// names, each owned by the experience or not.
fn lists(
    config_maps: &[(&str, bool)],
    services: &[(&str, bool)],
    sets: &[(&str, bool)],
    budgets: &[(&str, bool)],
) -> Vec<Call> {
    vec![
        seen(call(
            Method::GET,
            leak(format!("{CM}{SELECTOR}")),
            owned_list("ConfigMap", "v1", config_maps),
        )),
        seen(call(
            Method::GET,
            leak(format!("{SVC}{SELECTOR}")),
            owned_list("Service", "v1", services),
        )),
        seen(call(
            Method::GET,
            leak(format!("{STS}{SELECTOR}")),
            owned_list("StatefulSet", "apps/v1", sets),
        )),
        seen(call(
            Method::GET,
            leak(format!("{PDB}{SELECTOR}")),
            owned_list("PodDisruptionBudget", "policy/v1", budgets),
        )),
        seen(network_policies()),
    ]
}

/// The apply phase: the peer token (already there), the lists of what exists
/// (all of it owned by the experience), then [`applies`]. A test appends the
/// sweep's deletes it expects.
fn apply_and_sweep(current: &str, config_maps: &[&str], sets: &[&str]) -> Vec<Call> {
    let mut calls = vec![peer_token(true)];
    calls.extend(lists(
        &owned(config_maps),
        &owned(&["storefront-web", "storefront-web-headless"]),
        &owned(sets),
        &[],
    ));
    calls.extend(applies(current));
    calls
}

/// Runs one reconcile against the mocked API server; returns the requests' bodies.
async fn reconcile_with(
    fx: FrontendExperience,
    calls: Vec<Call>,
) -> (Result<(), Error>, Vec<Value>) {
    let (mut results, bodies) = reconcile_in_turn(vec![fx], calls).await;
    (results.remove(0), bodies)
}

/// Reconciles each of `experiences` in turn, with one operator (one context).
async fn reconcile_in_turn(
    experiences: Vec<FrontendExperience>,
    calls: Vec<Call>,
) -> (Vec<Result<(), Error>>, Vec<Value>) {
    let (seen_before, calls): (Vec<Call>, Vec<Call>) = calls.into_iter().partition(|c| c.seen);
    let children = caches(&seen_before);
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let server = tokio::spawn(async move {
        let mut bodies = Vec::new();
        for (i, expected) in calls.into_iter().enumerate() {
            let (request, respond) = handle.next_request().await.unwrap_or_else(|| {
                panic!(
                    "call {i}: the reconcile stopped before {} {}",
                    expected.method, expected.path
                )
            });
            let uri = request.uri().clone();
            let target = match expected.path.contains('?') {
                true => uri.path_and_query().unwrap().as_str().to_string(),
                false => uri.path().to_string(),
            };
            assert_eq!(
                (request.method(), target.as_str()),
                (&expected.method, expected.path),
                "call {i}: {} {uri}",
                request.method()
            );
            let bytes = request.into_body().collect_bytes().await.unwrap();
            bodies.push(serde_json::from_slice(&bytes).unwrap_or(Value::Null));
            let body = serde_json::to_vec(&expected.answer).unwrap();
            respond.send_response(
                Response::builder()
                    .status(expected.status)
                    .body(Body::from(body))
                    .unwrap(),
            );
        }
        // Nothing more may be asked for.
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(200), handle.next_request())
                .await
                .is_err_or_none(),
            "the reconcile made more calls than expected"
        );
        bodies
    });
    let client = Client::new(service, "default");
    let mut context = Context::new(
        client,
        BuildConfig {
            image: "facet-bff:test".into(),
            json_logs: false,
            network_policy: Some(NetworkPolicyConfig {
                http_from_namespaces: vec![],
                operator_namespace: "facet-system".into(),
                monitoring_namespace: "monitoring".into(),
            }),
            progress_deadline: None,
        },
        false,
        Arc::new(OperatorMetrics::default()),
    );
    // No broker here: the retention check is the e2e's.
    context.check_retention = false;
    let scope = Arc::new(Scope {
        context: Arc::new(context),
        children,
    });
    let mut results = Vec::new();
    for fx in experiences {
        results.push(reconcile(Arc::new(fx), scope.clone()).await.map(|_| ()));
    }
    (results, server.await.unwrap())
}

/// Caches holding what the watches have seen: each object (or each item of a
/// list) once, the first seen of a kind and name winning.
fn caches(seen_before: &[Call]) -> Children {
    let mut objects: Vec<Value> = Vec::new();
    for answer in seen_before.iter().map(|c| &c.answer) {
        let items = match answer["items"].as_array() {
            Some(items) => items.clone(),
            None => vec![answer.clone()],
        };
        for item in items {
            let same = |o: &Value| {
                o["kind"] == item["kind"] && o["metadata"]["name"] == item["metadata"]["name"]
            };
            if !objects.iter().any(same) {
                objects.push(item);
            }
        }
    }
    Children::new(
        cache(&objects, "StatefulSet"),
        cache(&objects, "Service"),
        cache(&objects, "ConfigMap"),
        cache(&objects, "PodDisruptionBudget"),
        cache(&objects, "NetworkPolicy"),
    )
}

fn cache<K>(objects: &[Value], kind: &str) -> Store<K>
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + 'static,
{
    let (reader, mut writer) = reflector::store();
    writer.apply_watcher_event(&watcher::Event::Init);
    for object in objects.iter().filter(|o| o["kind"] == kind) {
        let object = serde_json::from_value(object.clone()).unwrap();
        writer.apply_watcher_event(&watcher::Event::InitApply(object));
    }
    writer.apply_watcher_event(&watcher::Event::InitDone);
    reader
}

trait NoMoreCalls {
    fn is_err_or_none(&self) -> bool;
}

impl<T> NoMoreCalls for Result<Option<T>, tokio::time::error::Elapsed> {
    fn is_err_or_none(&self) -> bool {
        matches!(self, Err(_) | Ok(None))
    }
}

const APPLY: &str = "?&force=true&fieldManager=facet-operator";

#[tokio::test]
async fn a_valid_spec_applies_every_child_sweeps_orphans_then_writes_status() {
    let fx = storefront(1);
    let current = definition(&fx.spec.experience);
    let current_set = set_name("storefront-web", &current);
    let mut calls = survey(
        vec![set(Some(&current), true)],
        Some(service_selecting(Some(&current))),
    );
    calls.push(peer_token(true));
    // One replica: no budget is applied, and the sweep removes the one a
    // two-replica spec left, and a ConfigMap an older operator made; what is
    // labelled alike but owned by someone else stays.
    calls.extend(lists(
        &[
            (leak(format!("{current_set}-spec")), true),
            ("storefront-web-v0", true),
            ("lookalike", false),
        ],
        &owned(&["storefront-web", "storefront-web-headless"]),
        &owned(&[current_set.as_str()]),
        &owned(&["storefront-web"]),
    ));
    calls.extend(applies(&current));
    calls.extend(vec![
        call(
            Method::DELETE,
            leak(format!("{CM}/storefront-web-v0")),
            object("ConfigMap", "v1", "x"),
        ),
        call(
            Method::DELETE,
            leak(format!("{PDB}/storefront-web")),
            object("PodDisruptionBudget", "policy/v1", "x"),
        ),
        // A new generation is announced once.
        call(Method::POST, EVENTS, event()),
        call(
            Method::GET,
            leak(format!("{STS}/{current_set}")),
            set(Some(&current), true),
        ),
        call(
            Method::PATCH,
            STATUS,
            serde_json::to_value(storefront(1)).unwrap(),
        ),
    ]);
    let (result, bodies) = reconcile_with(fx, calls).await;
    result.unwrap();
    assert_eq!(bodies[4]["kind"], "StatefulSet");
    assert_eq!(bodies[4]["spec"]["replicas"], 1);
    assert_eq!(
        bodies[2]["spec"]["selector"]["facet.dev/definition"],
        current.as_str()
    );
    assert_eq!(bodies[5]["kind"], "NetworkPolicy");
    assert_eq!(
        bodies[5]["spec"]["ingress"][1]["ports"][0]["port"],
        "metrics"
    );
    assert_eq!(bodies[8]["reason"], "Applied");
    let status = &bodies[10]["status"];
    assert_eq!(status["observedGeneration"], 3);
    assert_eq!(status["definition"], current.as_str());
    assert!(status["rebuild"].is_null(), "removed by name");
    assert_eq!(condition(status, "SpecValid")["status"], "True");
    assert_eq!(condition(status, "Ready")["status"], "True");
}

fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == type_)
        .unwrap()
}

/// A rules change: the new definition's set is applied beside the serving one,
/// the Service stays, the serving set is neither applied nor swept, and the status
/// reports the new pod's progress, asked of the pod at the IP its Pod gives. Once
/// the new set is ready the Service moves; the old set goes at the next reconcile.
/// Once settled, a periodic reconcile reads what exists and writes nothing: no
/// apply of a child that is as it was applied, no peer token made again.
#[tokio::test]
async fn a_settled_experience_is_not_applied_again() {
    let fx = storefront(1);
    let current = definition(&fx.spec.experience);
    let current_set = set_name("storefront-web", &current);
    let config_maps = [leak(format!("{current_set}-spec"))];
    let reconcile = |first: bool| {
        let mut calls = survey(
            vec![set(Some(&current), true)],
            Some(service_selecting(Some(&current))),
        );
        match first {
            true => calls.extend(apply_and_sweep(&current, &config_maps, &[&current_set])),
            false => calls.extend(lists(
                &owned(&config_maps),
                &owned(&["storefront-web", "storefront-web-headless"]),
                &owned(&[current_set.as_str()]),
                &[],
            )),
        }
        if first {
            calls.push(call(Method::POST, EVENTS, event()));
        }
        calls.push(call(
            Method::GET,
            leak(format!("{STS}/{current_set}")),
            set(Some(&current), true),
        ));
        calls.push(call(
            Method::PATCH,
            STATUS,
            serde_json::to_value(storefront(1)).unwrap(),
        ));
        calls
    };
    let mut calls = reconcile(true);
    calls.extend(reconcile(false));
    let (results, _) = reconcile_in_turn(vec![fx.clone(), fx], calls).await;
    for result in results {
        result.unwrap();
    }
}

#[tokio::test]
async fn a_changed_definition_rebuilds_beside_the_serving_set_then_moves_the_service() {
    let fx = storefront(1);
    let new = definition(&fx.spec.experience);
    let new_set = set_name("storefront-web", &new);
    let old = "00000000000000aa";
    let old_set = set_name("storefront-web", old);
    let both = [old_set.as_str(), new_set.as_str()];
    let config_maps = [
        leak(format!("{old_set}-spec")),
        leak(format!("{new_set}-spec")),
    ];

    // Rebuilding: the new pod answers /readyz with 503 and its progress.
    let rebuilding = readyz(
        StatusCode::SERVICE_UNAVAILABLE,
        json!({"ready": false, "started": true, "partitions": [
            {"topic": "shop.orders.v1", "partition": 0, "start": 0, "position": 900, "target": 1000},
            {"topic": "shop.orders.v1", "partition": 1, "start": 0, "position": 1000, "target": 1000},
        ]}),
    )
    .await;
    let mut calls = survey(
        vec![set(Some(old), true), set(Some(&new), false)],
        Some(service_selecting(Some(old))),
    );
    calls.extend(apply_and_sweep(&new, &config_maps, &both));
    calls.push(call(Method::POST, EVENTS, event()));
    calls.push(call(
        Method::GET,
        leak(format!("{STS}/{old_set}")),
        set(Some(old), true),
    ));
    calls.push(call(
        Method::GET,
        leak(format!("{STS}/{new_set}")),
        set(Some(&new), false),
    ));
    calls.push(pod(&format!("{new_set}-0"), rebuilding));
    calls.push(call(
        Method::PATCH,
        STATUS,
        serde_json::to_value(storefront(1)).unwrap(),
    ));
    let (result, bodies) = reconcile_with(fx.clone(), calls).await;
    result.unwrap();
    assert_eq!(
        bodies[2]["spec"]["selector"]["facet.dev/definition"], old,
        "the Service stays"
    );
    let status = &bodies.last().unwrap()["status"];
    assert_eq!(status["definition"], old);
    assert_eq!(status["rebuild"]["definition"], new.as_str());
    assert_eq!(status["rebuild"]["percent"], 95);
    assert_eq!(status["rebuild"]["partitions"], 2);
    assert_eq!(status["rebuild"]["partitionsCaughtUp"], 1);
    assert_eq!(
        condition(status, "Ready")["status"],
        "True",
        "the old pod serves"
    );
    assert_eq!(condition(status, "Progressing")["reason"], "Rebuilding");

    // Caught up: the Service moves to the new pods; the old set stays one more round.
    let mut fx = fx;
    fx.metadata.generation = Some(4); // a new generation: announced again
    let mut calls = survey(
        vec![set(Some(old), true), set(Some(&new), true)],
        Some(service_selecting(Some(old))),
    );
    calls.extend(apply_and_sweep(&new, &config_maps, &both));
    calls.push(call(Method::POST, EVENTS, event()));
    calls.push(call(Method::POST, EVENTS, event())); // Switched
                                                     // The new set serves now: read once, for the rollout and the rebuild alike.
    calls.push(call(
        Method::GET,
        leak(format!("{STS}/{new_set}")),
        set(Some(&new), true),
    ));
    let caught_up = readyz(
        StatusCode::OK,
        json!({"ready": true, "started": true, "partitions": []}),
    )
    .await;
    calls.push(pod(&format!("{new_set}-0"), caught_up));
    calls.push(call(
        Method::PATCH,
        STATUS,
        serde_json::to_value(storefront(1)).unwrap(),
    ));
    let (result, bodies) = reconcile_with(fx.clone(), calls).await;
    result.unwrap();
    assert_eq!(
        bodies[2]["spec"]["selector"]["facet.dev/definition"],
        new.as_str(),
        "moved"
    );
    assert_eq!(bodies.last().unwrap()["status"]["definition"], new.as_str());
    let switched = bodies.iter().find(|b| b["reason"] == "Switched").unwrap();
    assert!(switched["note"]
        .as_str()
        .unwrap()
        .contains(&format!("{new} has caught up")));

    // The Service has moved: the old set and its ConfigMap are swept.
    fx.metadata.generation = Some(5);
    let mut calls = survey(
        vec![set(Some(old), true), set(Some(&new), true)],
        Some(service_selecting(Some(&new))),
    );
    calls.extend(apply_and_sweep(&new, &config_maps, &both));
    calls.extend([
        call(
            Method::DELETE,
            leak(format!("{CM}/{old_set}-spec")),
            object("ConfigMap", "v1", "x"),
        ),
        call(
            Method::DELETE,
            leak(format!("{STS}/{old_set}")),
            object("StatefulSet", "apps/v1", "x"),
        ),
    ]);
    calls.push(call(Method::POST, EVENTS, event()));
    calls.push(call(
        Method::GET,
        leak(format!("{STS}/{new_set}")),
        set(Some(&new), true),
    ));
    calls.push(call(
        Method::PATCH,
        STATUS,
        serde_json::to_value(storefront(1)).unwrap(),
    ));
    let (result, bodies) = reconcile_with(fx, calls).await;
    result.unwrap();
    let status = &bodies.last().unwrap()["status"];
    assert!(status["rebuild"].is_null(), "removed by name");
    assert_eq!(condition(status, "Progressing")["status"], "False");
}

#[tokio::test]
async fn an_invalid_spec_applies_nothing_and_reports_the_compilers_words() {
    let mut fx = storefront(1);
    fx.spec.experience.projections[0].key = "evnt.orderId".into();
    // The pods of the last valid spec keep serving; the status reports on them.
    let serving = "00000000000000aa";
    let serving_set = set_name("storefront-web", serving);
    let mut calls = vec![call(Method::POST, EVENTS, event())];
    calls.extend(survey(
        vec![set(Some(serving), true)],
        Some(service_selecting(Some(serving))),
    ));
    calls.push(call(
        Method::GET,
        leak(format!("{STS}/{serving_set}")),
        set(Some(serving), true),
    ));
    calls.push(call(
        Method::PATCH,
        STATUS,
        serde_json::to_value(storefront(1)).unwrap(),
    ));
    let (result, bodies) = reconcile_with(fx, calls).await;
    result.unwrap();
    assert_eq!(bodies[0]["reason"], "InvalidSpec");
    assert_eq!(bodies[0]["type"], "Warning");
    let note = bodies[0]["note"].as_str().unwrap();
    assert!(
        note.contains("spec.projections[0].key: unknown variable `evnt`"),
        "{note}"
    );
    let conditions = bodies[2]["status"]["conditions"].as_array().unwrap();
    let spec_valid = conditions
        .iter()
        .find(|c| c["type"] == "SpecValid")
        .unwrap();
    assert_eq!(spec_valid["status"], "False");
}

#[tokio::test]
async fn replicas_beyond_the_bound_are_refused_and_reported_without_work_per_replica() {
    // As an object stored before the CRD schema had the bound: the compiler refuses
    // it, and the status lists a bounded number of groups (it used to abort the
    // operator allocating 51 GB of group names).
    let mut fx = storefront(1);
    fx.spec.experience.replicas = i32::MAX;
    let serving = "00000000000000aa";
    let serving_set = set_name("storefront-web", serving);
    let mut calls = vec![call(Method::POST, EVENTS, event())];
    calls.extend(survey(
        vec![set(Some(serving), true)],
        Some(service_selecting(Some(serving))),
    ));
    calls.push(call(
        Method::GET,
        leak(format!("{STS}/{serving_set}")),
        set(Some(serving), true),
    ));
    calls.push(call(
        Method::PATCH,
        STATUS,
        serde_json::to_value(storefront(1)).unwrap(),
    ));
    let (result, bodies) = reconcile_with(fx, calls).await;
    result.unwrap();
    assert_eq!(bodies[0]["reason"], "InvalidSpec");
    let note = bodies[0]["note"].as_str().unwrap();
    assert!(
        note.contains("spec.replicas: must be at most 100"),
        "{note}"
    );
    let status = &bodies[2]["status"];
    assert_eq!(condition(status, "SpecValid")["status"], "False");
    assert_eq!(status["consumerGroups"].as_array().unwrap().len(), 100);
}

#[tokio::test]
async fn a_refused_apply_names_its_phase_and_child_is_reported_and_stops_there() {
    let fx = storefront(1);
    let set = set_name("storefront-web", &definition(&fx.spec.experience));
    let mut calls = survey(vec![], None);
    // A first apply: the peer token is made, with 32 random bytes.
    calls.push(peer_token(false));
    calls.extend(lists(&[], &[], &[], &[]));
    calls.push(Call {
        status: StatusCode::FORBIDDEN,
        ..call(
            Method::PATCH,
            leak(format!("{CM}/{set}-spec{APPLY}")),
            json!({"apiVersion": "v1", "kind": "Status", "status": "Failure",
                   "message": "configmaps is forbidden", "reason": "Forbidden", "code": 403}),
        )
    });
    // Nothing more is applied; the refusal is told in a Warning Event and the status.
    calls.push(call(Method::POST, EVENTS, event()));
    // The set it would have made does not exist.
    calls.push(Call {
        status: StatusCode::NOT_FOUND,
        ..call(
            Method::GET,
            leak(format!("{STS}/{set}")),
            json!({"apiVersion": "v1", "kind": "Status", "status": "Failure",
                   "message": "not found", "reason": "NotFound", "code": 404}),
        )
    });
    calls.push(call(
        Method::PATCH,
        STATUS,
        serde_json::to_value(storefront(1)).unwrap(),
    ));
    let (result, bodies) = reconcile_with(fx, calls).await;
    assert_eq!(bodies[2]["type"], "Warning");
    assert_eq!(bodies[2]["reason"], "ApplyFailed");
    let note = bodies[2]["note"].as_str().unwrap();
    assert!(note.contains("configmaps is forbidden"), "{note}");
    let degraded = condition(&bodies[4]["status"], "Degraded");
    assert_eq!(
        (degraded["status"].as_str(), degraded["reason"].as_str()),
        (Some("True"), Some("ApplyFailed"))
    );
    assert_eq!(degraded["message"].as_str(), Some(note));
    let token = bodies[0]["stringData"]["token"].as_str().unwrap();
    assert_eq!(token.len(), 64);
    assert!(token.chars().all(|c| c.is_ascii_hexdigit()), "{token}");
    assert_eq!(bodies[0]["metadata"]["ownerReferences"][0]["uid"], UID);
    let error = result.unwrap_err();
    assert_eq!(error.kind(), "apply");
    assert!(
        error
            .to_string()
            .starts_with(&format!("applying ConfigMap {set}-spec: ")),
        "{error}"
    );
    assert!(
        std::error::Error::source(&error).is_some(),
        "the API error is kept"
    );
}
