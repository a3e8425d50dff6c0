/**
 * Version lists are kept HTTP-cache style (issue 11 point 1): fresh for
 * `metadataTtl` (default 30 s), then revalidated with the upstream's
 * validators; a 304 keeps the stored list, new bytes replace it, an upstream
 * that fails gets the stale list served, and concurrent revalidations share
 * one upstream request. The clock is injected: nothing here sleeps.
 */
import { assert, assertEquals } from "../lib/deps/assert.ts";
import { join } from "../lib/deps/path.ts";
import { DEFAULT_METADATA_TTL_MS } from "../lib/config/config.ts";
import { type RecordedRequest, startFakeRegistry } from "./fake_registry.ts";
import { jsonOf, makeTestApp, mirrorFixture, tempDir, TWO_PROVIDERS } from "./_helpers.ts";

const H = "registry.terraform.io";
const INDEX = `/${H}/example/beta/index.json`;
const REGISTRY_VERSIONS = `/v1/providers/${H}/example/beta/versions`;
const isBetaList = (r: RecordedRequest) => r.path === "/v1/providers/example/beta/versions";

/** A fixture with a settable clock; `validators` as the fake registry's option. */
async function fixture(validators: "etag" | "last-modified" | "both" | "none", extra: {
  down?: () => boolean;
  hold?: () => Promise<void> | undefined;
} = {}) {
  const clock = { t: 1_000_000 };
  const t = await mirrorFixture({
    providers: TWO_PROVIDERS,
    registry: {
      versionValidators: validators,
      intercept: async (req) => {
        if (!new URL(req.url).pathname.endsWith("/versions")) return undefined;
        await extra.hold?.();
        if (extra.down?.()) return new Response("down", { status: 503 });
        return undefined;
      },
    },
    deps: { now: () => clock.t },
  });
  return Object.assign(t, { clock });
}

async function versionsOf(res: Response): Promise<string[]> {
  return Object.keys((await jsonOf(res) as { versions: object }).versions);
}

Deno.test("default freshness of a version list is 30 s: no upstream request while fresh", async () => {
  assertEquals(DEFAULT_METADATA_TTL_MS, 30_000);
  await using t = await fixture("etag");
  assertEquals(t.config.metadataTtlMs, 30_000);
  const first = await t.get(INDEX);
  assertEquals(first.headers.get("x-repoxy-cache"), "miss");
  await first.body?.cancel();
  assertEquals(t.fake.count(isBetaList), 1);
  t.clock.t += 29_999;
  for (const path of [INDEX, REGISTRY_VERSIONS]) {
    const res = await t.get(path);
    assertEquals(res.status, 200);
    assertEquals(res.headers.get("x-repoxy-cache"), "hit");
    await res.body?.cancel();
  }
  assertEquals(t.fake.count(isBetaList), 1);
});

Deno.test("a stale list is revalidated with its ETag; the 304 keeps it and restarts its freshness", async () => {
  await using t = await fixture("etag");
  const first = await t.get(REGISTRY_VERSIONS);
  const firstBytes = await first.text();
  await t.app.settle(); // the list's read-ahead stores the newest release's documents
  const etag = (await fetch(`${t.fake.registryUrl}/v1/providers/example/beta/versions`).then(
    async (r) => (await r.body?.cancel(), r.headers.get("etag")),
  ))!;
  assert(etag, "the fake must send an ETag");
  const refsFile = join(t.dir.path, "refs", H, "example", "beta", "versions.json");
  const onDisk = await Deno.readFile(refsFile);
  const generation = t.app.cache.refs.generation;

  t.clock.t += 30_000;
  const res = await t.get(REGISTRY_VERSIONS);
  assertEquals(res.status, 200);
  assertEquals(res.headers.get("x-repoxy-cache"), "revalidated");
  assertEquals(await res.text(), firstBytes);
  const asked = t.fake.requests.filter(isBetaList).filter((r) => r.server === "registry");
  assertEquals(asked.length, 3, "Repoxy's two requests plus the test's own");
  assertEquals(asked[2]!.headers.get("if-none-match"), etag);
  assertEquals(asked[0]!.headers.get("if-none-match"), null, "the first fetch is unconditional");
  // Nothing rewritten: same file bytes, same generation (kept answers stay valid).
  assertEquals(await Deno.readFile(refsFile), onDisk);
  assertEquals(t.app.cache.refs.generation, generation);
  // The access log shows the revalidation.
  assert(t.log.records.some((r) => r.msg === "request" && r.cache === "revalidated"));

  // Fresh again for 30 s from the revalidation, not from the first fetch.
  t.clock.t += 29_000;
  const hit = await t.get(INDEX);
  assertEquals(hit.headers.get("x-repoxy-cache"), "hit");
  await hit.body?.cancel();
  assertEquals(t.fake.count(isBetaList), 3);
});

Deno.test("Last-Modified is revalidated with If-Modified-Since", async () => {
  await using t = await fixture("last-modified");
  await (await t.get(INDEX)).body?.cancel();
  t.clock.t += 31_000;
  const res = await t.get(INDEX);
  assertEquals(res.headers.get("x-repoxy-cache"), "revalidated");
  assertEquals(await versionsOf(res), ["2.3.4"]);
  const asked = t.fake.requests.filter(isBetaList);
  assertEquals(asked.length, 2);
  assert(asked[1]!.headers.get("if-modified-since"), "If-Modified-Since must be sent");
});

Deno.test("a release published upstream is served after the list goes stale (both protocols)", async () => {
  await using t = await fixture("etag");
  assertEquals(await versionsOf(await t.get(INDEX)), ["2.3.4"]);
  await t.fake.publish("example", "beta", { version: "2.4.0", platforms: ["linux_amd64"] });
  t.clock.t += 10_000;
  assertEquals(await versionsOf(await t.get(INDEX)), ["2.3.4"], "still fresh: not asked");
  t.clock.t += 20_000;
  const res = await t.get(INDEX);
  assertEquals(res.headers.get("x-repoxy-cache"), "miss");
  assertEquals(await versionsOf(res), ["2.4.0", "2.3.4"]);
  const reg = await jsonOf(await t.get(REGISTRY_VERSIONS)) as {
    versions: Array<{ version: string }>;
  };
  assertEquals(reg.versions.map((v) => v.version), ["2.3.4", "2.4.0"]);
  const v = await t.get(`/${H}/example/beta/2.4.0.json`);
  assertEquals(v.status, 200);
  assertEquals(Object.keys((await jsonOf(v) as { archives: object }).archives), ["linux_amd64"]);
  const a = t.fake.archive("beta", "2.4.0", "linux_amd64");
  const zip = await t.get(`/${H}/example/beta/${a.filename}`);
  assertEquals(new Uint8Array(await zip.arrayBuffer()), a.bytes);
  // The conditional request carried the old ETag and got the new list.
  const asked = t.fake.requests.filter(isBetaList);
  assertEquals(asked.length, 2);
  assert(asked[1]!.headers.get("if-none-match"));
  // The new list's validator is kept: the next revalidation is a 304.
  t.clock.t += 30_000;
  const again = await t.get(INDEX);
  assertEquals(again.headers.get("x-repoxy-cache"), "revalidated");
  assertEquals(await versionsOf(again), ["2.4.0", "2.3.4"]);
});

Deno.test("without validators a stale list is refetched plainly", async () => {
  await using t = await fixture("none");
  await (await t.get(INDEX)).body?.cancel();
  await t.fake.publish("example", "beta", { version: "2.4.0", platforms: ["linux_amd64"] });
  t.clock.t += 30_000;
  const res = await t.get(INDEX);
  assertEquals(res.headers.get("x-repoxy-cache"), "miss");
  assertEquals(await versionsOf(res), ["2.4.0", "2.3.4"]);
  const asked = t.fake.requests.filter(isBetaList);
  assertEquals(asked.length, 2);
  assertEquals(asked[1]!.headers.get("if-none-match"), null);
  assertEquals(asked[1]!.headers.get("if-modified-since"), null);
});

Deno.test("a Last-Modified in the same second as the answer is not trusted for If-Modified-Since", async () => {
  // The registry stamps the list with the second it answers in: a release
  // published later in that same second would carry the same Last-Modified.
  const clock = { t: 1_000_000 };
  let published = false;
  const stamp = new Date().toUTCString();
  await using t = await mirrorFixture({
    providers: TWO_PROVIDERS,
    registry: {
      intercept: (req) => {
        if (!new URL(req.url).pathname.endsWith("/beta/versions")) return undefined;
        const ims = req.headers.get("if-modified-since");
        if (ims !== null && Date.parse(ims) >= Date.parse(stamp)) {
          return new Response(null, { status: 304, headers: { "last-modified": stamp } });
        }
        const versions = [{ version: "2.3.4", protocols: ["5.0"], platforms: [] as object[] }];
        if (published) versions.push({ version: "2.4.0", protocols: ["5.0"], platforms: [] });
        return new Response(JSON.stringify({ versions }), {
          headers: { "content-type": "application/json", "last-modified": stamp, date: stamp },
        });
      },
    },
    deps: { now: () => clock.t },
  });
  assertEquals(await versionsOf(await t.get(INDEX)), ["2.3.4"]);
  published = true;
  clock.t += 30_000;
  const res = await t.get(INDEX);
  assertEquals(await versionsOf(res), ["2.4.0", "2.3.4"]);
  const asked = t.fake.requests.filter((r) => r.path.endsWith("/beta/versions"));
  assertEquals(asked.length, 2);
  assertEquals(asked[1]!.headers.get("if-modified-since"), null);
});

Deno.test("upstream down after the list went stale: the stored list is served, marked stale", async () => {
  let down = false;
  await using t = await fixture("etag", { down: () => down });
  const first = await (await t.get(REGISTRY_VERSIONS)).text();
  down = true;
  t.clock.t += 31_000;
  for (const path of [INDEX, REGISTRY_VERSIONS]) {
    const res = await t.get(path);
    assertEquals(res.status, 200);
    assertEquals(res.headers.get("x-repoxy-cache"), "stale");
    if (path === REGISTRY_VERSIONS) assertEquals(await res.text(), first);
    else assertEquals(await versionsOf(res), ["2.3.4"]);
  }
  assert(t.log.records.some((r) => r.msg === "upstream failed; serving stale metadata"));
  // Back up: once the failed refresh is 10 s old (metadata.ts FAILING_UPSTREAM_GAP_MS),
  // the next request revalidates (304) and the list is fresh again.
  down = false;
  t.clock.t += 10_000;
  const back = await t.get(INDEX);
  assertEquals(back.headers.get("x-repoxy-cache"), "revalidated");
  await back.body?.cancel();
});

Deno.test("concurrent requests for a stale list share one revalidation", async () => {
  let release: () => void = () => {};
  let holding = false;
  const held = new Promise<void>((r) => release = r);
  await using t = await fixture("etag", { hold: () => holding ? held : undefined });
  await (await t.get(INDEX)).body?.cancel();
  assertEquals(t.fake.count(isBetaList), 1);
  holding = true;
  t.clock.t += 30_000;
  const paths = Array.from({ length: 12 }, (_, i) => i % 2 ? INDEX : REGISTRY_VERSIONS);
  const pending = paths.map((p) => t.get(p));
  // Let every request reach the shared revalidation before the upstream answers.
  await new Promise((r) => setTimeout(r, 100));
  release();
  const all = await Promise.all(pending);
  for (const res of all) {
    assertEquals(res.status, 200);
    assertEquals(res.headers.get("x-repoxy-cache"), "revalidated");
    await res.body?.cancel();
  }
  assertEquals(t.fake.count(isBetaList), 2, "one upstream revalidation for twelve requests");
});

Deno.test("max-age of answers built from a version list never outlasts its freshness", async () => {
  await using t = await fixture("etag");
  const maxAge = (res: Response) => res.headers.get("cache-control");
  const first = await t.get(INDEX);
  assertEquals(maxAge(first), "public, max-age=30");
  await first.body?.cancel();
  t.clock.t += 20_500;
  for (const path of [INDEX, REGISTRY_VERSIONS, `/${H}/example/beta/2.3.4.json`]) {
    const res = await t.get(path);
    assertEquals(maxAge(res), "public, max-age=10", path);
    await res.body?.cancel();
  }
  // Documents of a released version never change: the usual minute.
  const dl = await t.get(`/v1/providers/${H}/example/beta/2.3.4/download/linux/amd64`);
  assertEquals(maxAge(dl), "public, max-age=60");
  await dl.body?.cancel();
});

Deno.test("a list stamped in the future (clock set back) is revalidated, not fresh for the gap", async () => {
  await using t = await fixture("etag");
  await (await t.get(INDEX)).body?.cancel();
  t.clock.t -= 3_600_000; // NTP stepped the clock back an hour
  const res = await t.get(INDEX);
  assertEquals(res.headers.get("x-repoxy-cache"), "revalidated");
  await res.body?.cancel();
  assertEquals(t.fake.count(isBetaList), 2);
  // Confirmed at the new time: fresh again from there.
  const hit = await t.get(REGISTRY_VERSIONS);
  assertEquals(hit.headers.get("x-repoxy-cache"), "hit");
  await hit.body?.cancel();
  assertEquals(t.fake.count(isBetaList), 2);
});

Deno.test("an oversized ETag from the upstream is not kept; the next revalidation is a plain GET", async () => {
  const clock = { t: 1_000_000 };
  const huge = `"${"e".repeat(8_000)}"`;
  await using t = await mirrorFixture({
    providers: TWO_PROVIDERS,
    registry: {
      intercept: (req) => {
        if (!new URL(req.url).pathname.endsWith("/beta/versions")) return undefined;
        const versions = [{ version: "2.3.4", protocols: ["5.0"], platforms: [] }];
        return new Response(JSON.stringify({ versions }), {
          headers: { "content-type": "application/json", etag: huge },
        });
      },
    },
    deps: { now: () => clock.t },
  });
  await (await t.get(INDEX)).body?.cancel();
  const refs = await Deno.readTextFile(
    join(t.dir.path, "refs", H, "example", "beta", "versions.json"),
  );
  assert(!refs.includes("eeee"), "the ETag is not stored");
  clock.t += 30_000;
  await (await t.get(INDEX)).body?.cancel();
  const asked = t.fake.requests.filter((r) => r.path.endsWith("/beta/versions"));
  assertEquals(asked.length, 2);
  assertEquals(asked[1]!.headers.get("if-none-match"), null);
});

Deno.test("a 304 moves the time only of the copy it confirmed", async () => {
  await using t = await fixture("etag");
  const refs = t.app.cache.refs;
  const key = `${H}/example/beta/versions`;
  await refs.put(key, { fetchedAt: 1, url: "https://r.test/v", body: "A", etag: '"a"' });
  const a = (await refs.get(key))!;
  assertEquals(await refs.touch(key, a, 5), true);
  assertEquals((await refs.get(key))!.fetchedAt, 5);
  const generation = refs.generation;
  // Written meanwhile (another process, a refetch): the 304 was about "A".
  await refs.put(key, { fetchedAt: 6, url: "https://r.test/v", body: "B", etag: '"b"' });
  assertEquals(await refs.touch(key, a, 9), false);
  assertEquals((await refs.get(key))!.fetchedAt, 6);
  assertEquals(refs.generation, generation + 1, "only the new bytes moved the generation");
});

Deno.test("validators are kept in refs/: after a restart the first revalidation is still a 304", async () => {
  await using fake = await startFakeRegistry({
    providers: TWO_PROVIDERS,
    versionValidators: "etag",
  });
  await using dir = await tempDir();
  let now = 1_000_000;
  {
    await using first = await makeTestApp(fake, dir.path, {}, { now: () => now });
    await (await first.get(INDEX)).body?.cancel();
  }
  now += 31_000;
  await using second = await makeTestApp(fake, dir.path, {}, { now: () => now });
  const res = await second.get(INDEX);
  assertEquals(res.headers.get("x-repoxy-cache"), "revalidated");
  assertEquals(await versionsOf(res), ["2.3.4"]);
  const asked = fake.requests.filter(isBetaList);
  assertEquals(asked.length, 2);
  assert(asked[1]!.headers.get("if-none-match"));
});

Deno.test("a slow revalidation: the stale list is served after the grace, the refresh lands for the next request", async () => {
  let release: () => void = () => {};
  let holding = false;
  const held = new Promise<void>((r) => release = r);
  await using t = await fixture("etag", { hold: () => holding ? held : undefined });
  await (await t.get(INDEX)).body?.cancel();
  await t.fake.publish("example", "beta", { version: "2.4.0", platforms: ["linux_amd64"] });
  holding = true;
  t.clock.t += 30_000;
  // The upstream does not answer: after the 2 s grace the stored list is served.
  const res = await t.get(INDEX);
  assertEquals(res.status, 200);
  assertEquals(res.headers.get("x-repoxy-cache"), "stale");
  assertEquals(await versionsOf(res), ["2.3.4"]);
  assert(
    t.log.records.some((r) => r.msg === "upstream slow; serving stale metadata while refreshing"),
  );
  // The revalidation went on; once it lands, the new list is fresh with no other request.
  release();
  await t.app.settle();
  const next = await t.get(INDEX);
  assertEquals(next.headers.get("x-repoxy-cache"), "hit");
  assertEquals(await versionsOf(next), ["2.4.0", "2.3.4"]);
  assertEquals(t.fake.count(isBetaList), 2);
});

Deno.test("an upstream that answers 304 whatever changed still has its list fetched whole every 10 min", async () => {
  // A CDN whose validators do not follow the content: every conditional
  // request gets a 304, so only an unconditional one sees a new release.
  const clock = { t: 1_000_000 };
  let conditional = 0;
  await using t = await mirrorFixture({
    providers: TWO_PROVIDERS,
    registry: {
      versionValidators: "etag",
      intercept: (req) => {
        if (!new URL(req.url).pathname.endsWith("/versions")) return undefined;
        if (!req.headers.has("if-none-match")) return undefined;
        conditional++;
        return new Response(null, { status: 304, headers: { etag: '"stuck"' } });
      },
    },
    deps: { now: () => clock.t },
  });
  const first = await t.get(INDEX);
  assertEquals(first.headers.get("x-repoxy-cache"), "miss");
  await first.body?.cancel();
  await t.fake.publish("example", "beta", { version: "2.4.0", platforms: ["linux_amd64"] });
  // Revalidated (wrongly confirmed) every 30 s for just under 10 min.
  for (let i = 0; i < 19; i++) {
    clock.t += 30_000;
    const res = await t.get(INDEX);
    assertEquals(res.headers.get("x-repoxy-cache"), "revalidated", `round ${i}`);
    assertEquals((await versionsOf(res)).includes("2.4.0"), false);
  }
  assertEquals(conditional, 19);
  // 10 min after the last full fetch: asked unconditionally, the release shows.
  clock.t += 30_000;
  const res = await t.get(INDEX);
  assertEquals(res.headers.get("x-repoxy-cache"), "miss");
  assertEquals((await versionsOf(res)).includes("2.4.0"), true);
  assertEquals(conditional, 19);
  // The full fetch starts a new 10 min: the next one is conditional again.
  clock.t += 30_000;
  const again = await t.get(INDEX);
  assertEquals(again.headers.get("x-repoxy-cache"), "revalidated");
  await again.body?.cancel();
  assertEquals(conditional, 20);
});
