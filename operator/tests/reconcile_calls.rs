//! The exact API calls one reconcile makes, without a cluster: the client talks to
//! a mocked API server (tower-test) that checks each request's method and path in
//! order and answers it.

use std::sync::Arc;

use facet_operator::api::{FrontendExperience, FrontendExperienceSpec};
use facet_operator::metrics::OperatorMetrics;
use facet_operator::reconcile::builders::BuildConfig;
use facet_operator::reconcile::controller::{reconcile, Context, Error};
use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
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
}

fn call(method: Method, path: &'static str, answer: Value) -> Call {
    Call {
        method,
        path,
        status: StatusCode::OK,
        answer,
    }
}

/// An object as the API server returns it.
fn object(kind: &str, api_version: &str, name: &str) -> Value {
    json!({"apiVersion": api_version, "kind": kind,
           "metadata": {"name": name, "namespace": "shop", "uid": format!("uid-{name}")}})
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
                "name": name, "namespace": "shop",
                "ownerReferences": [{"apiVersion": "facet.dev/v1alpha1", "kind": "FrontendExperience",
                                     "name": "storefront-web", "uid": owner}]}})
        })
        .collect();
    json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList",
           "metadata": {"resourceVersion": "1"}, "items": items})
}

/// Runs one reconcile against the mocked API server; returns the requests' bodies.
async fn reconcile_with(
    fx: FrontendExperience,
    calls: Vec<Call>,
) -> (Result<(), Error>, Vec<Value>) {
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
        },
        false,
        Arc::new(OperatorMetrics::default()),
    );
    // No broker here: the retention check is the e2e's.
    context.check_retention = false;
    let context = Arc::new(context);
    let result = reconcile(Arc::new(fx), context).await.map(|_| ());
    (result, server.await.unwrap())
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
    let cm = "/api/v1/namespaces/shop/configmaps";
    let svc = "/api/v1/namespaces/shop/services";
    let sts = "/apis/apps/v1/namespaces/shop/statefulsets";
    let pdb = "/apis/policy/v1/namespaces/shop/poddisruptionbudgets";
    let selector = "?&labelSelector=app.kubernetes.io%2Finstance%3Dstorefront-web%2Capp.kubernetes.io%2Fmanaged-by%3Dfacet-operator";
    let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
    let calls = vec![
        call(
            Method::PATCH,
            leak(format!("{cm}/storefront-web-spec{APPLY}")),
            object("ConfigMap", "v1", "storefront-web-spec"),
        ),
        call(
            Method::PATCH,
            leak(format!("{svc}/storefront-web{APPLY}")),
            object("Service", "v1", "storefront-web"),
        ),
        call(
            Method::PATCH,
            leak(format!("{svc}/storefront-web-headless{APPLY}")),
            object("Service", "v1", "storefront-web-headless"),
        ),
        call(
            Method::PATCH,
            leak(format!("{sts}/storefront-web{APPLY}")),
            object("StatefulSet", "apps/v1", "storefront-web"),
        ),
        // One replica: no budget is applied, and the sweep removes the one a
        // two-replica spec left, and a ConfigMap an older operator made; what is
        // labelled alike but owned by someone else stays.
        call(
            Method::GET,
            leak(format!("{cm}{selector}")),
            owned_list(
                "ConfigMap",
                "v1",
                &[
                    ("storefront-web-spec", true),
                    ("storefront-web-v0", true),
                    ("lookalike", false),
                ],
            ),
        ),
        call(
            Method::DELETE,
            leak(format!("{cm}/storefront-web-v0")),
            object("ConfigMap", "v1", "storefront-web-v0"),
        ),
        call(
            Method::GET,
            leak(format!("{svc}{selector}")),
            owned_list(
                "Service",
                "v1",
                &[("storefront-web", true), ("storefront-web-headless", true)],
            ),
        ),
        call(
            Method::GET,
            leak(format!("{sts}{selector}")),
            owned_list("StatefulSet", "apps/v1", &[("storefront-web", true)]),
        ),
        call(
            Method::GET,
            leak(format!("{pdb}{selector}")),
            owned_list(
                "PodDisruptionBudget",
                "policy/v1",
                &[("storefront-web", true)],
            ),
        ),
        call(
            Method::DELETE,
            leak(format!("{pdb}/storefront-web")),
            object("PodDisruptionBudget", "policy/v1", "storefront-web"),
        ),
        // A new generation is announced once.
        call(
            Method::POST,
            "/apis/events.k8s.io/v1/namespaces/shop/events",
            json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e"}, "eventTime": null}),
        ),
        call(
            Method::GET,
            leak(format!("{sts}/storefront-web")),
            object("StatefulSet", "apps/v1", "storefront-web"),
        ),
        call(
            Method::PATCH,
            "/apis/facet.dev/v1alpha1/namespaces/shop/frontendexperiences/storefront-web/status",
            serde_json::to_value(storefront(1)).unwrap(),
        ),
    ];
    let (result, bodies) = reconcile_with(storefront(1), calls).await;
    result.unwrap();
    assert_eq!(bodies[3]["kind"], "StatefulSet");
    assert_eq!(bodies[3]["spec"]["replicas"], 1);
    assert_eq!(bodies[10]["reason"], "Applied");
    let status = &bodies[12]["status"];
    assert_eq!(status["observedGeneration"], 3);
    let spec_valid = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "SpecValid")
        .unwrap();
    assert_eq!(spec_valid["status"], "True");
}

#[tokio::test]
async fn an_invalid_spec_applies_nothing_and_reports_the_compilers_words() {
    let mut fx = storefront(1);
    fx.spec.experience.projections[0].key = "evnt.orderId".into();
    let calls = vec![
        call(
            Method::POST,
            "/apis/events.k8s.io/v1/namespaces/shop/events",
            json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e"}, "eventTime": null}),
        ),
        call(
            Method::GET,
            "/apis/apps/v1/namespaces/shop/statefulsets/storefront-web",
            object("StatefulSet", "apps/v1", "storefront-web"),
        ),
        call(
            Method::PATCH,
            "/apis/facet.dev/v1alpha1/namespaces/shop/frontendexperiences/storefront-web/status",
            serde_json::to_value(storefront(1)).unwrap(),
        ),
    ];
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
async fn a_refused_apply_names_its_phase_and_child_and_stops_there() {
    let calls = vec![Call {
        method: Method::PATCH,
        path: "/api/v1/namespaces/shop/configmaps/storefront-web-spec?&force=true&fieldManager=facet-operator",
        status: StatusCode::FORBIDDEN,
        answer: json!({"apiVersion": "v1", "kind": "Status", "status": "Failure",
                       "message": "configmaps is forbidden", "reason": "Forbidden", "code": 403}),
    }];
    let (result, _) = reconcile_with(storefront(1), calls).await;
    let error = result.unwrap_err();
    assert_eq!(error.kind(), "apply");
    assert!(
        error
            .to_string()
            .starts_with("applying ConfigMap storefront-web-spec: "),
        "{error}"
    );
    assert!(
        std::error::Error::source(&error).is_some(),
        "the API error is kept"
    );
}
