//! The TypeScript types `facet-bff schema --typescript` writes, checked by the real
//! TypeScript compiler as a frontend project would use them: a program that reads
//! rows, filters and commands by their names type-checks, and one with a misspelt
//! field or an undeclared enum value does not, naming what is wrong.

use facet_e2e::node;

const PROGRAM: &str = r#"import type { Rows, ProjectionName, Filters, Commands, CommandName, CommandResult } from "./facet.js";

function rowOf<P extends ProjectionName>(_projection: P, row: Rows[P]): Rows[P] {
  return row;
}
function send<C extends CommandName>(_command: C, _input: Commands[C]): CommandResult {
  return { commandId: "c-1", status: "visible", position: "p" };
}
const order = rowOf("order", {
  id: "o-1",
  status: "shipped",
  customer: { name: "Ada", tier: "gold" },
  items: [{ sku: "s-1", quantity: 2 }],
});
const filter: Filters["order"] = { status: "placed", paid: true };
const result = send("cancelOrder", { orderId: "o-1" });
export const seen = [order.status, order.customer?.tier, filter, result.status];
"#;

#[test]
fn generated_types_check_what_clients_write() {
    let dir = tempfile::tempdir().unwrap();
    node::write_storefront_types(dir.path());

    let (ok, said) = node::type_check(dir.path(), PROGRAM);
    assert!(ok, "the program type-checks:\n{said}");

    let misspelt = PROGRAM.replace("order.status,", "order.statuz,");
    let (ok, said) = node::type_check(dir.path(), &misspelt);
    assert!(
        !ok && said.contains("Property 'statuz' does not exist on type 'Order'"),
        "{said}"
    );

    let undeclared = PROGRAM.replace(r#"{ status: "placed", paid"#, r#"{ status: "lost", paid"#);
    let (ok, said) = node::type_check(dir.path(), &undeclared);
    assert!(
        !ok && said.contains(r#"Type '"lost"' is not assignable"#),
        "{said}"
    );

    let unknown_projection = PROGRAM.replace(r#"rowOf("order""#, r#"rowOf("orders""#);
    let (ok, said) = node::type_check(dir.path(), &unknown_projection);
    assert!(!ok && said.contains(r#""orders""#), "{said}");
}
