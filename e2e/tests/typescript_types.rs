//! The TypeScript types `facet-bff schema --typescript` writes, checked by the real
//! TypeScript compiler as a frontend project would use them: a program that reads
//! rows, filters and commands by their names type-checks, and one with a misspelt
//! field or an undeclared enum value does not, naming what is wrong.

use std::path::Path;

use facet_e2e::node;
use facet_e2e::process::facet_bff_binary;
use facet_e2e::repo_root;

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

/// Runs `tsc --noEmit --strict` on `program` beside the generated types.
fn type_check(dir: &Path, program: &str) -> (bool, String) {
    std::fs::write(dir.join("app.ts"), program).unwrap();
    let output = node::tsc()
        .args([
            "--noEmit", "--strict", "--module", "nodenext", "--target", "es2022",
        ])
        .arg(dir.join("app.ts"))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&output.stdout).to_string();
    (output.status.success(), said)
}

#[test]
fn generated_types_check_what_clients_write() {
    let output = std::process::Command::new(facet_bff_binary())
        .arg("schema")
        .arg(repo_root().join("config/samples/storefront.yaml"))
        .arg("--typescript")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("facet.ts"), &output.stdout).unwrap();

    let (ok, said) = type_check(dir.path(), PROGRAM);
    assert!(ok, "the program type-checks:\n{said}");

    let misspelt = PROGRAM.replace("order.status,", "order.statuz,");
    let (ok, said) = type_check(dir.path(), &misspelt);
    assert!(
        !ok && said.contains("Property 'statuz' does not exist on type 'Order'"),
        "{said}"
    );

    let undeclared = PROGRAM.replace(r#"{ status: "placed", paid"#, r#"{ status: "lost", paid"#);
    let (ok, said) = type_check(dir.path(), &undeclared);
    assert!(
        !ok && said.contains(r#"Type '"lost"' is not assignable"#),
        "{said}"
    );

    let unknown_projection = PROGRAM.replace(r#"rowOf("order""#, r#"rowOf("orders""#);
    let (ok, said) = type_check(dir.path(), &unknown_projection);
    assert!(!ok && said.contains(r#""orders""#), "{said}");
}
