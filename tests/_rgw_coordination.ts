/**
 * A {@link CoordinationStore} over the RGW test cluster's S3 API, for the
 * fleet lease tests against a real store (the S3 storage's own
 * implementation takes its place once it exists). Conditional PUTs
 * (`If-None-Match: *`, `If-Match` without quotes, as RGW wants), the
 * response's `Last-Modified` and `Date` as the store's clock. `crash()`
 * makes every later call fail, as a killed replica's would.
 * @module
 */
import type { CoordinationStore } from "../lib/cache/coordination.ts";
import { rgwClient, type RgwEndpoint } from "./_rgw.ts";

/** A replica's client of the coordination objects in one bucket. */
export interface RgwCoordination extends CoordinationStore {
  crash(): void;
}

/** A coordination store on `bucket` (keys under `prefix`). */
export function rgwCoordination(rgw: RgwEndpoint, bucket: string, prefix = ""): RgwCoordination {
  const c = rgwClient(rgw);
  let crashed = false;
  const url = (key: string) => `${rgw.endpoint}/${bucket}/${prefix}${key}`;
  const unquote = (e: string | null) => (e ?? "").replace(/^"|"$/g, "");
  const call = async (key: string, init: RequestInit): Promise<Response> => {
    if (crashed) throw new Error("this replica is dead");
    // Signed, sent once: aws4fetch's own retries would drop 5xx bodies
    // unread, and a store error is the lease code's to handle.
    return await fetch(await c.sign(url(key), init));
  };
  const put = async (key: string, body: Uint8Array, cond: Record<string, string>) => {
    const r = await call(key, { method: "PUT", body: new Uint8Array(body), headers: cond });
    const text = await r.text();
    if (r.status === 412) return undefined;
    if (r.status !== 200) {
      throw new Error(`PUT ${key} (${Object.keys(cond)[0]}): ${r.status} ${text.slice(0, 200)}`);
    }
    return { etag: unquote(r.headers.get("etag")) };
  };
  return {
    crash: () => crashed = true,
    create: async (key, body) => (await put(key, body, { "if-none-match": "*" })) ?? "exists",
    replace: async (key, body, etag) => (await put(key, body, { "if-match": etag })) ?? "changed",
    read: async (key) => {
      const r = await call(key, {});
      if (r.status === 404) {
        await r.arrayBuffer();
        return undefined;
      }
      if (r.status !== 200) {
        await r.arrayBuffer();
        throw new Error(`GET ${key}: ${r.status}`);
      }
      return {
        body: new Uint8Array(await r.arrayBuffer()),
        etag: unquote(r.headers.get("etag")),
        lastModified: new Date(r.headers.get("last-modified") ?? 0),
        serverNow: new Date(r.headers.get("date") ?? 0),
      };
    },
    remove: async (key, etag) => {
      const r = await call(key, { method: "DELETE", headers: etag ? { "if-match": etag } : {} });
      await r.arrayBuffer();
      if (r.status !== 204 && r.status !== 200 && r.status !== 404 && r.status !== 412) {
        throw new Error(`DELETE ${key}: ${r.status}`);
      }
    },
  };
}
