//! The GraphQL schema generated from each sample.

use facet_bff::serve::graphql::schema;
use facet_bff::spec::{compile, parse_manifests};

fn sdl(sample: &str) -> String {
    let path = format!(
        "{}/../config/samples/{sample}.yaml",
        env!("CARGO_MANIFEST_DIR")
    );
    let spec = parse_manifests(&std::fs::read_to_string(path).unwrap())
        .remove(0)
        .unwrap()
        .spec;
    schema(&compile(&spec).unwrap())
        .expect("a valid schema")
        .sdl()
}

#[test]
fn every_sample_gives_a_valid_schema() {
    for sample in ["storefront", "blog-post", "scheduler"] {
        assert!(sdl(sample).contains("type Query"), "{sample}");
    }
}

#[test]
fn types_enums_deprecations_and_roots_follow_the_spec() {
    let sdl = sdl("storefront");
    assert!(sdl.contains("enum OrderStatus"), "{sdl}");
    assert!(sdl.contains("carrier: String @deprecated(reason: \"Use the tracking link from the shipping page.\")"), "{sdl}");
    assert!(sdl.contains("items: [OrderItemsItem]"), "{sdl}");
    assert!(sdl.contains("order(key: String!): Order"), "{sdl}");
    assert!(
        sdl.contains("orderList(where: OrderFilter, first: Int, after: String): OrderPage!"),
        "{sdl}"
    );
    assert!(sdl.contains("type Subscription"), "{sdl}");
    assert!(sdl.contains("customerSummary(key: String, where: CustomerSummaryFilter, since: String): CustomerSummaryChange!"), "{sdl}");
}
