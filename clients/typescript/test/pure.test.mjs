// The client's pure parts, on the built package (dist/).
import { test } from "node:test";
import assert from "node:assert/strict";
import { RowSet, applyMergePatch, backoffDelay } from "../dist/index.js";
import { expiresAt, refreshDelay } from "../dist/token.js";

test("a row set applies snapshots, upserts, patches, removes and deletes in key order", () => {
  const rows = new RowSet();
  rows.apply({ type: "snapshot", position: "p1", rows: [{ key: "b", row: { n: 1 } }, { key: "a", row: { n: 0 } }] });
  assert.deepEqual(rows.keys(), ["a", "b"]);
  rows.apply({ type: "change", op: "upsert", key: "ab", row: { n: 2 } });
  rows.apply({ type: "change", op: "patch", key: "b", patch: { n: 3, extra: { x: 1 } } });
  assert.deepEqual(rows.keys(), ["a", "ab", "b"]);
  assert.deepEqual(rows.get("b"), { n: 3, extra: { x: 1 } });
  assert.equal(rows.apply({ type: "change", op: "remove", key: "a" }), true);
  assert.equal(rows.apply({ type: "change", op: "delete", key: "zz" }), false);
  assert.deepEqual(rows.rows(), [{ n: 2 }, { n: 3, extra: { x: 1 } }]);
  assert.equal(rows.apply({ type: "reset", reason: "rebuilt" }), false, "a reset keeps the rows until the snapshot");
  assert.equal(rows.size, 2);
  rows.apply({ type: "snapshot", rows: [{ key: "c", row: {} }] });
  assert.deepEqual(rows.keys(), ["c"]);
});

test("a snapshot in pages replaces the rows at its last page; a cut-short one is forgotten", () => {
  const rows = new RowSet();
  rows.apply({ type: "snapshot", position: "p1", rows: [{ key: "old", row: {} }] });
  assert.equal(rows.apply({ type: "snapshot", more: true, rows: [{ key: "a", row: {} }] }), false);
  assert.deepEqual(rows.keys(), ["old"], "the rows stay as they were until the last page");
  rows.dropPages();
  rows.apply({ type: "snapshot", more: true, rows: [{ key: "b", row: {} }] });
  assert.equal(rows.apply({ type: "snapshot", position: "p2", rows: [{ key: "c", row: {} }] }), true);
  assert.deepEqual(rows.keys(), ["b", "c"], "the dropped page is not among them");
});

test("merge patches follow RFC 7396", () => {
  // The RFC's own example (appendix A), and that the target is not modified.
  const target = { title: "Goodbye!", author: { givenName: "John", familyName: "Doe" }, tags: ["example", "sample"], content: "x" };
  const patch = { title: "Hello!", phoneNumber: "+01-123-456-7890", author: { familyName: null }, tags: ["example"] };
  assert.deepEqual(applyMergePatch(target, patch), {
    title: "Hello!", author: { givenName: "John" }, tags: ["example"], content: "x", phoneNumber: "+01-123-456-7890",
  });
  assert.equal(target.author.familyName, "Doe");
  assert.deepEqual(applyMergePatch({ a: 1 }, ["x"]), ["x"]);
  assert.deepEqual(applyMergePatch(undefined, { a: { b: null, c: 1 } }), { a: { c: 1 } });
});

test("backoff grows, is capped, and is jittered within the upper half", () => {
  const low = (attempt) => backoffDelay(attempt, {}, () => 0);
  const high = (attempt) => backoffDelay(attempt, {}, () => 1);
  assert.deepEqual([0, 1, 2].map(low), [125, 250, 500]);
  assert.equal(high(0), 250);
  assert.equal(high(100), 10_000);
  assert.equal(low(100), 5_000);
});

test("a token is refreshed ahead of its expiry, half-way when it lives shorter", () => {
  const payload = Buffer.from(JSON.stringify({ sub: "ada", exp: 2_000_000_000 })).toString("base64url");
  assert.equal(expiresAt(`h.${payload}.s`), 2_000_000_000_000);
  assert.equal(expiresAt("not a jwt"), undefined);
  assert.equal(refreshDelay(100_000, 0, 30_000), 70_000);
  assert.equal(refreshDelay(10_000, 0, 30_000), 5_000);
  assert.equal(refreshDelay(0, 1_000, 30_000), 0);
});
