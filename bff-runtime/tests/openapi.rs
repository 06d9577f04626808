//! The OpenAPI document generated from a sample's declared fields.

use facet_bff::serve::openapi::document;
use facet_bff::spec::{compile, parse_manifests};

fn storefront() -> serde_json::Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../config/samples/storefront.yaml"
    );
    let spec = parse_manifests(&std::fs::read_to_string(path).unwrap())
        .remove(0)
        .unwrap()
        .spec;
    document(&compile(&spec).unwrap(), "shop/storefront-web")
}

#[test]
fn schemas_follow_the_declared_fields() {
    let doc = storefront();
    assert_eq!(doc["openapi"], "3.1.0");
    let order = &doc["components"]["schemas"]["Order"];
    assert_eq!(
        order["properties"]["status"]["enum"],
        serde_json::json!(["placed", "shipped", "cancelled"])
    );
    assert_eq!(order["properties"]["carrier"]["deprecated"], true);
    assert_eq!(
        order["properties"]["items"]["items"]["properties"]["quantity"]["type"],
        "integer"
    );
    assert_eq!(
        order["description"],
        "One customer order, as the order page renders it."
    );
    assert!(doc["components"]["schemas"]["CustomerSummary"].is_object());
}

#[test]
fn paths_list_and_get_with_filters_and_bearer_auth() {
    let doc = storefront();
    let list = &doc["paths"]["/v1/order"]["get"];
    let parameters: Vec<&str> = list["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for expected in ["limit", "after", "fields", "status", "total", "paid"] {
        assert!(
            parameters.contains(&expected),
            "{expected} in {parameters:?}"
        );
    }
    assert!(!parameters.contains(&"items"), "arrays are not filters");
    // The page as `GET /v1/order` answers it: a position to resume from, rows by key.
    let page = &list["responses"]["200"]["content"]["application/json"]["schema"]["properties"];
    let fields: Vec<&String> = page.as_object().unwrap().keys().collect();
    assert_eq!(fields, ["items", "next", "position"]);
    let item: Vec<&String> = page["items"]["items"]["properties"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert_eq!(item, ["key", "row"]);
    // An embedded row is an object with the fields the embed chose.
    let order = &doc["components"]["schemas"]["Order"]["properties"]["customer"];
    let shown: Vec<&String> = order["properties"].as_object().unwrap().keys().collect();
    assert_eq!(shown, ["name", "tier"]);
    assert!(doc["paths"]["/v1/order/{key}"]["get"]["responses"]["304"].is_object());
    assert_eq!(doc["security"][0]["bearer"], serde_json::json!([]));
}
