// A subscription's local copy of the rows it may see, kept in key order, and
// how each server message changes it.

import { applyMergePatch } from "./mergePatch.js";

/** What the server sends about one subscription (docs/protocol.md). */
export type ServerUpdate =
  /** With `more`, one page of a snapshot: the next pages follow, and only the
   * last one has a position. */
  | { type: "snapshot"; position?: string; more?: boolean; rows: { key: string; row: unknown }[] }
  | { type: "change"; op: "upsert"; key: string; position?: string; row: unknown }
  | { type: "change"; op: "patch"; key: string; position?: string; patch: unknown }
  | { type: "change"; op: "delete" | "remove"; key: string; position?: string }
  | { type: "reset"; reason?: string };

export class RowSet<Row> {
  private byKey = new Map<string, Row>();
  private sorted: string[] = [];
  /** The pages of a snapshot received so far, until its last one. */
  private pages: Map<string, Row> | undefined;

  /** Forgets the pages of a snapshot cut short (the subscription starts again). */
  dropPages(): void {
    this.pages = undefined;
  }

  get size(): number {
    return this.byKey.size;
  }

  get(key: string): Row | undefined {
    return this.byKey.get(key);
  }

  /** The keys in order. */
  keys(): readonly string[] {
    return this.sorted;
  }

  /** The rows in key order. */
  rows(): Row[] {
    return this.sorted.map((key) => this.byKey.get(key) as Row);
  }

  /** Applies one update; true when the rows changed. A `reset` keeps the rows
   * until the snapshot after it replaces them, so a screen does not blank; a
   * snapshot in pages replaces them at its last page. */
  apply(update: ServerUpdate): boolean {
    switch (update.type) {
      case "snapshot": {
        const pages = this.pages ?? new Map<string, Row>();
        for (const { key, row } of update.rows) pages.set(key, row as Row);
        this.pages = update.more ? pages : undefined;
        if (update.more) return false;
        this.byKey = pages;
        this.sorted = [...pages.keys()].sort(compare);
        return true;
      }
      case "reset":
        return false;
      case "change":
        switch (update.op) {
          case "upsert":
            this.put(update.key, update.row as Row);
            return true;
          case "patch":
            this.put(update.key, applyMergePatch(this.byKey.get(update.key), update.patch) as Row);
            return true;
          case "delete":
          case "remove":
            return this.remove(update.key);
        }
    }
  }

  private put(key: string, row: Row): void {
    if (!this.byKey.has(key)) this.sorted.splice(this.insertionPoint(key), 0, key);
    this.byKey.set(key, row);
  }

  private remove(key: string): boolean {
    if (!this.byKey.delete(key)) return false;
    this.sorted.splice(this.insertionPoint(key), 1);
    return true;
  }

  /** The index of `key` in the sorted keys, or where it would go. */
  private insertionPoint(key: string): number {
    let low = 0;
    let high = this.sorted.length;
    while (low < high) {
      const middle = (low + high) >>> 1;
      if (compare(this.sorted[middle], key) < 0) low = middle + 1;
      else high = middle;
    }
    return low;
  }
}

/** Keys in the order the server lists them (by their UTF-8 bytes, which for
 * keys of one script is code point order). */
function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
