/**
 * What operators see of the fleet (Ceph RGW, tests/_rgw.ts): `/-/metrics`
 * and the status page name the storage kind and replica id, the bucket's
 * health (up or down, since when, the last error), this replica's uploads
 * and fills, and the fleet lease outcomes as `repoxy_fleet_leases_total`;
 * the replica id labels what the replica logs.
 * @module
 */
import { assert, assertEquals, assertMatch } from "../lib/deps/assert.ts";
import { join } from "../lib/deps/path.ts";
import { startFakeRegistry } from "./fake_registry.ts";
import { bytesOf, makeTestApp, sha256Hex, tempDir } from "./_helpers.ts";
import { newBucket, rgw, skipUnlessRgw, storageConfig } from "./_rgw.ts";

const ignore = skipUnlessRgw("fleet figures on the S3 bucket");
const H = "registry.terraform.io";
const ALPHA = [{
  namespace: "example",
  type: "alpha",
  versions: [{ version: "1.0.0", platforms: ["linux_amd64"] }],
}];
const path = (file: string) => `/${H}/example/alpha/${file}`;

/** The value of one sample line (`name{labels} value`), or undefined when absent. */
function sample(text: string, series: string): number | undefined {
  const line = text.split("\n").find((l) => l.startsWith(series + " "));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

Deno.test({
  name:
    "fleet figures: metrics and status page show kind, replica, bucket health, uploads, fills and lease outcomes per replica",
  ignore,
  async fn() {
    await using fake = await startFakeRegistry({ providers: ALPHA });
    await using dir = await tempDir();
    const bucket = await newBucket(rgw!);
    const linux = fake.archive("alpha", "1.0.0", "linux_amd64");
    await using a = await makeTestApp(
      fake,
      join(dir.path, "a"),
      storageConfig(bucket, { replicaId: "replica-a" }),
    );
    await using b = await makeTestApp(
      fake,
      join(dir.path, "b"),
      storageConfig(bucket, { replicaId: "replica-b" }),
    );
    assertEquals(sha256Hex(await bytesOf(await a.get(path(linux.filename)))), linux.sha256);
    await a.app.settle();
    assertEquals(sha256Hex(await bytesOf(await b.get(path(linux.filename)))), linux.sha256);
    await b.app.settle();

    const ma = await (await a.get("/-/metrics")).text();
    assertEquals(sample(ma, `repoxy_storage_info{kind="s3",replica="replica-a"}`), 1);
    assertEquals(sample(ma, "repoxy_storage_bucket_up"), 1);
    assertEquals(sample(ma, "repoxy_storage_uploads_total"), 1);
    assertEquals(sample(ma, "repoxy_storage_upload_bytes_total"), linux.bytes.length);
    assertEquals(sample(ma, "repoxy_storage_fills_total"), 0);
    assertEquals(sample(ma, "repoxy_storage_bucket_errors_total"), 0);
    assertEquals(sample(ma, `repoxy_fleet_leases_total{outcome="created"}`), 1);
    assertEquals(sample(ma, `repoxy_fleet_leases_total{outcome="unleased"}`), 0);
    assert((sample(ma, "repoxy_storage_bucket_state_since_seconds") ?? 0) > 1.7e9);

    const mb = await (await b.get("/-/metrics")).text();
    assertEquals(sample(mb, `repoxy_storage_info{kind="s3",replica="replica-b"}`), 1);
    assertEquals(sample(mb, "repoxy_storage_uploads_total"), 0);
    assertEquals(sample(mb, "repoxy_storage_fills_total"), 1);
    assertEquals(sample(mb, "repoxy_storage_fill_bytes_total"), linux.bytes.length);
    assertEquals(sample(mb, `repoxy_fleet_leases_total{outcome="created"}`), 0);

    const page = await (await b.get("/")).text();
    assertMatch(page, /<h2 id="storage">Storage<\/h2>/);
    assertMatch(page, /replica-b/);
    assertMatch(page, /badge ok">reachable/);
    assertMatch(page, /Fills from the bucket<\/th><td>1 \(/);

    // Every line a replica logs names it.
    assert(a.log.records.length > 0);
    assertEquals(a.log.records.filter((r) => r.replica !== "replica-a"), []);
  },
});

Deno.test({
  name: "fleet figures: an unreachable bucket shows as down with its last error, counted",
  ignore,
  async fn() {
    await using fake = await startFakeRegistry({ providers: ALPHA });
    await using dir = await tempDir();
    const bucket = await newBucket(rgw!);
    // Nothing listens on port 1: every bucket request fails at once.
    await using t = await makeTestApp(
      fake,
      dir.path,
      storageConfig(bucket, { endpoint: "http://127.0.0.1:1", replicaId: "edge-1" }),
    );
    const linux = fake.archive("alpha", "1.0.0", "linux_amd64");
    assertEquals(sha256Hex(await bytesOf(await t.get(path(linux.filename)))), linux.sha256);
    await t.app.settle();
    await (await t.get("/-/readyz")).body?.cancel();
    const m = await (await t.get("/-/metrics")).text();
    assertEquals(sample(m, "repoxy_storage_bucket_up"), 0);
    assert((sample(m, "repoxy_storage_bucket_errors_total") ?? 0) >= 1);
    const page = await (await t.get("/")).text();
    assertMatch(page, /badge bad">unreachable/);
    const storage = page.slice(page.indexOf(`id="storage"`), page.indexOf(`id="client-config"`));
    assertMatch(storage, /Last bucket error<\/th><td>[^<]*s3:\/\/t-/);
    assert(!storage.includes('Last bucket error</th><td><span class="muted">none'), storage);
  },
});

Deno.test("fleet figures: on the local disk alone, metrics say kind disk and nothing of a bucket", async () => {
  await using dir = await tempDir();
  await using t = await makeTestApp(undefined, dir.path);
  const m = await (await t.get("/-/metrics")).text();
  assertEquals(sample(m, `repoxy_storage_info{kind="disk",replica=""}`), 1);
  assertEquals(sample(m, "repoxy_storage_bucket_up"), undefined);
  assertEquals(sample(m, `repoxy_fleet_leases_total{outcome="created"}`), undefined);
  const page = await (await t.get("/")).text();
  assert(!page.includes(`id="storage"`));
});
