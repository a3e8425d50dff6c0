/**
 * An in-memory {@link CoordinationStore} with S3's semantics, for fleet lease
 * tests: `If-None-Match: *` and `If-Match` answer 412 ("exists", "changed"),
 * ETags are content hashes (as S3's MD5 ETags are), and `Last-Modified` and
 * `Date` come from a store clock the test controls, at one-second precision;
 * like Ceph RGW, DELETE ignores If-Match.
 *
 * Each replica gets its own {@link FakeCoordinationClient} (`client(name)`),
 * which records what it won and can `crash()`: from then on every call
 * fails, as if its process were killed, and its leases go stale.
 * @module
 */
import type { CoordinationStore } from "../lib/cache/coordination.ts";
import { createHash } from "../lib/deps/crypto.ts";

interface Stored {
  body: Uint8Array;
  etag: string;
  lastModified: number;
}

/** One successful conditional write or delete. */
export interface CoordinationOp {
  client: string;
  op: "create" | "replace" | "remove";
  key: string;
}

/** One replica's view of the store. */
export interface FakeCoordinationClient extends CoordinationStore {
  readonly name: string;
  /** Every later call rejects (a killed process). */
  crash(): void;
}

/** The shared store. */
export class FakeCoordinationStore {
  readonly objects = new Map<string, Stored>();
  /** Successful writes and deletes, in order. */
  readonly ops: CoordinationOp[] = [];
  /** Writes answered 412, by op. */
  readonly refused = { create: 0, replace: 0, remove: 0 };
  /** The next this many calls (of any client) fail, as RGW's 500s do. */
  failNext = 0;
  /** Whether DELETE honours If-Match (S3 does; Ceph RGW does not, the default here). */
  honourIfMatchOnDelete = false;
  /** The store's clock, ms since the epoch (the test moves it). */
  clock = Date.UTC(2026, 0, 1, 12, 0, 0);

  /** Moves the store clock forward. */
  advance(ms: number): void {
    this.clock += ms;
  }

  /** The store clock at one-second precision, as S3's headers carry it. */
  #httpDate(ms: number): Date {
    return new Date(Math.floor(ms / 1000) * 1000);
  }

  /** Successful ops of one kind (optionally of one client). */
  count(op: CoordinationOp["op"], client?: string): number {
    return this.ops.filter((o) => o.op === op && (client === undefined || o.client === client))
      .length;
  }

  /** A replica's client of this store. */
  client(name: string): FakeCoordinationClient {
    let crashed = false;
    // A round trip: other callers interleave, as they do over the network.
    const trip = async () => {
      await new Promise((r) => setTimeout(r, 0));
      if (crashed) throw new Error(`${name} is dead`);
      if (this.failNext > 0) {
        this.failNext--;
        throw new Error("500 UnknownError");
      }
    };
    const put = (key: string, body: Uint8Array): { etag: string } => {
      const etag = createHash("sha256").update(body).digest("hex").slice(0, 32);
      this.objects.set(key, { body: body.slice(), etag, lastModified: this.clock });
      return { etag };
    };
    return {
      name,
      crash: () => crashed = true,
      create: async (key, body) => {
        await trip();
        if (this.objects.has(key)) {
          this.refused.create++;
          return "exists";
        }
        this.ops.push({ client: name, op: "create", key });
        return put(key, body);
      },
      replace: async (key, body, etag) => {
        await trip();
        if (this.objects.get(key)?.etag !== etag) {
          this.refused.replace++;
          return "changed";
        }
        this.ops.push({ client: name, op: "replace", key });
        return put(key, body);
      },
      read: async (key) => {
        await trip();
        const o = this.objects.get(key);
        if (!o) return undefined;
        return {
          body: o.body.slice(),
          etag: o.etag,
          lastModified: this.#httpDate(o.lastModified),
          serverNow: this.#httpDate(this.clock),
        };
      },
      remove: async (key, etag) => {
        await trip();
        const o = this.objects.get(key);
        // Ceph RGW deletes whatever the ETag (measured); so does this fake
        // unless told to honour If-Match.
        if (!o || (this.honourIfMatchOnDelete && etag !== undefined && o.etag !== etag)) {
          this.refused.remove++;
          return;
        }
        this.ops.push({ client: name, op: "remove", key });
        this.objects.delete(key);
      },
    };
  }
}
