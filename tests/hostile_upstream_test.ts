/**
 * Hostile upstreams and clients against metadata (issue 10 rows 2, 3, 4, 14):
 * memory held for metadata is bounded by bytes, oversized documents are
 * refused without being buffered, a `{version}.json` with hundreds of
 * platforms is fetched a few at a time and only while someone waits, module
 * answers are bounded and abandoned at the deadline, what does not exist
 * upstream is remembered for a short time, and presigned URLs stay off disk.
 */
import { assert, assertEquals, assertMatch } from "../lib/deps/assert.ts";
import { ByteLru } from "../lib/cache/byte_lru.ts";
import { NegativeCache } from "../lib/cache/negative_cache.ts";
import { RefsStore } from "../lib/cache/refs_store.ts";
import { DiskStorage } from "../lib/cache/disk_storage.ts";
import { bytesOf, jsonOf, makeTestApp, mirrorFixture, sha256Hex, tempDir } from "./_helpers.ts";
import {
  bigVersionsDoc,
  endlessBody,
  type HostileUpstream,
  platformNames,
  startHostile,
} from "./hostile_upstream.ts";

const H = "registry.terraform.io";
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** An app whose registry.terraform.io is the hostile upstream. */
async function appOn(
  up: HostileUpstream,
  dir: string,
  raw: Record<string, unknown> = {},
  deps: Parameters<typeof makeTestApp>[3] = {},
) {
  return await makeTestApp(undefined, dir, { upstreams: { [H]: { url: up.url } }, ...raw }, deps);
}

function errorOf(body: unknown): string {
  return (body as { errors: string[] }).errors[0] ?? "";
}

function downloadDoc(os: string, arch: string, pad = 0): string {
  return JSON.stringify({
    protocols: ["5.0"],
    os,
    arch,
    filename: `terraform-provider-big_1.0.0_${os}_${arch}.zip`,
    download_url: `https://releases.invalid/big_${os}_${arch}.zip`,
    shasum: sha256Hex(new TextEncoder().encode(`${os}_${arch}`)),
    padding: "x".repeat(pad),
  });
}

Deno.test("many providers with big version lists: metadata memory stays under its byte bound, evicted lists are re-read from disk", async () => {
  const docs = new Map<string, string>();
  await using up = startHostile((path) => {
    const m = /^\/v1\/providers\/big\/(p\d+)\/versions$/.exec(path);
    if (!m) return Response.json({ errors: ["Not Found"] }, { status: 404 });
    let doc = docs.get(m[1]!);
    if (!doc) docs.set(m[1]!, doc = bigVersionsDoc(`big/${m[1]}`, 300, 6)); // ~100 KB
    return new Response(doc, { headers: { "content-type": "application/json" } });
  });
  await using dir = await tempDir();
  const bound = 1024 * 1024;
  await using t = await appOn(up, dir.path, { limits: { metadataMemory: bound } });
  const refs = t.app.cache.refs;
  const first = await bytesOf(await t.get(`/${H}/big/p0/index.json`));
  let peak = 0;
  for (let i = 0; i < 40; i++) {
    const res = await t.get(`/${H}/big/p${i}/index.json`);
    assertEquals(res.status, 200);
    await res.body?.cancel();
    peak = Math.max(peak, refs.memoryBytes);
  }
  // 40 lists of ~100 KB (~12 MB charged with their parsed forms) went through
  // a 5/8 MB share of the bound.
  assert(peak <= bound * 5 / 8, `refs memory peaked at ${peak} bytes`);
  assert(refs.memoryBytes > 0);
  assertEquals(up.count(/\/versions$/), 40);
  // p0 fell out of memory long ago: it comes back from refs/ on disk, not upstream.
  const again = await bytesOf(await t.get(`/${H}/big/p0/index.json`));
  assertEquals(sha256Hex(again), sha256Hex(first));
  assertEquals(up.count(/\/versions$/), 40);
});

Deno.test("a metadata document over limits.metadataDocument is refused by Content-Length: 502 naming the upstream", async () => {
  const big = bigVersionsDoc("big/huge", 300, 6); // ~100 KB, under the old 8 MB constant
  let cancelled = false;
  await using up = startHostile(() =>
    new Response(
      new ReadableStream({
        start(c) {
          c.enqueue(new TextEncoder().encode(big));
          c.close();
        },
        cancel() {
          cancelled = true;
        },
      }),
      { headers: { "content-length": String(big.length) } },
    )
  );
  await using dir = await tempDir();
  await using t = await appOn(up, dir.path, { limits: { metadataDocument: "64KB" } });
  const res = await t.get(`/${H}/big/huge/index.json`);
  assertEquals(res.status, 502);
  const msg = errorOf(await jsonOf(res));
  assertMatch(msg, new RegExp(`${H.replaceAll(".", "\\.")}.*${big.length} bytes`));
  assertEquals(up.count(/\/versions$/), 1, "a size refusal is not retried");
  void cancelled;
});

Deno.test("a metadata document with no Content-Length that never ends is cut at limits.metadataDocument", async () => {
  const endless = endlessBody(16 * 1024, 0);
  await using up = startHostile(() => new Response(endless.body));
  await using dir = await tempDir();
  await using t = await appOn(up, dir.path, { limits: { metadataDocument: "64KB" } });
  const res = await t.get(`/${H}/big/endless/index.json`);
  assertEquals(res.status, 502);
  assertMatch(
    errorOf(await jsonOf(res)),
    new RegExp(
      `registry\\.terraform\\.io.*limit is ${t.config.limits.metadataDocumentBytes} bytes`,
    ),
  );
  await endless.cancelled; // the upstream transfer was stopped
  // What was pulled is socket buffers, not the old 8 MB cap read into memory.
  assert(endless.pulled() < 8 * 1024 * 1024, `pulled ${endless.pulled()} bytes`);
});

/**
 * Download documents of the fan-out: all but the first platform's, which
 * every `{version}.json` reads for its SHA256SUMS URL (one per request).
 */
const FANOUT = /\/download\/os(?!0\/)\d+\//;

/** A provider with versions listing `n` platforms, and no SHA256SUMS to take hashes from. */
function manyPlatforms(
  n: number,
  opts: { delayMs?: number; pad?: number; broken?: string } = {},
) {
  const names = platformNames(n);
  const list = JSON.stringify({
    id: "big/wide",
    versions: ["1.0.0", "2.0.0", "3.0.0"].map((version) => ({
      version,
      protocols: ["5.0"],
      platforms: names.map((p) => ({ os: p.split("_")[0], arch: p.split("_")[1] })),
    })),
  });
  return startHostile(async (path) => {
    if (path === "/v1/providers/big/wide/versions") return new Response(list);
    const m = /^\/v1\/providers\/big\/wide\/\d\.0\.0\/download\/([^/]+)\/([^/]+)$/.exec(path);
    if (!m) return Response.json({ errors: ["Not Found"] }, { status: 404 });
    if (opts.delayMs) await sleep(opts.delayMs);
    if (`${m[1]}_${m[2]}` === opts.broken) return new Response("{not json");
    return new Response(downloadDoc(m[1]!, m[2]!, opts.pad ?? 0));
  }, [/\/download\//, FANOUT]);
}

Deno.test("{version}.json with 700 platforms: documents fetched platformConcurrency at a time, work stops when nobody waits", async () => {
  await using up = manyPlatforms(700, { delayMs: 40 });
  await using dir = await tempDir();
  await using t = await appOn(up, dir.path, { limits: { platformConcurrency: 3 } }, {
    requestDeadlineMs: 800,
  });
  const dl = /\/download\//;
  const first = t.get(`/${H}/big/wide/1.0.0.json`);
  await sleep(400);
  // A second client joins the same work: it must go on until its deadline too.
  const second = t.get(`/${H}/big/wide/1.0.0.json`);
  const a = await first;
  assertEquals(a.status, 504);
  await a.body?.cancel();
  const atFirst = up.count(dl);
  await sleep(250);
  assert(up.count(dl) > atFirst, "the work stopped while a follower still waited");
  const b = await second;
  assertEquals(b.status, 504);
  await b.body?.cancel();
  const atSecond = up.count(dl);
  await sleep(600);
  const after = up.count(dl);
  // Documents already in flight may finish; no new ones are started.
  assert(after - atSecond <= 3, `${after - atSecond} documents fetched after everyone gave up`);
  assert(after < 700, `fetched all ${after}`);
  assert(up.maxInflight(dl) <= 3, `${up.maxInflight(dl)} documents at once`);
  assert(up.maxInflight(dl) >= 2, "fetched one at a time");
  await t.app.settle();
});

Deno.test("{version}.json with 700 big download documents: the bytes fetched for one answer are bounded", async () => {
  await using up = manyPlatforms(700, { pad: 100 * 1024 });
  await using dir = await tempDir();
  const bound = 1024 * 1024;
  await using t = await appOn(up, dir.path, {
    limits: { platformConcurrency: 2, metadataMemory: bound },
  });
  const res = await t.get(`/${H}/big/wide/1.0.0.json`);
  assertEquals(res.status, 502);
  assertMatch(errorOf(await jsonOf(res)), /registry\.terraform\.io sent more than/);
  // ~100 KB each: the budget is ~10 documents (plus those already in flight).
  const n = up.count(/\/download\//);
  assert(n <= bound / (100 * 1024) + 3, `${n} documents fetched`);
  assert(t.app.cache.refs.memoryBytes <= bound * 5 / 8);
});

Deno.test("{version}.json with 300 platforms not in SHA256SUMS completes, hashes from each document, several at once", async () => {
  await using up = manyPlatforms(300, { delayMs: 5 });
  await using dir = await tempDir();
  await using t = await appOn(up, dir.path, { limits: { platformConcurrency: 8 } });
  const res = await t.get(`/${H}/big/wide/1.0.0.json`);
  assertEquals(res.status, 200);
  const doc = await jsonOf(res) as { archives: Record<string, { hashes: string[] }> };
  assertEquals(Object.keys(doc.archives).length, 300);
  assertEquals(
    doc.archives["os5_arch5"]!.hashes,
    [`zh:${sha256Hex(new TextEncoder().encode("os5_arch5"))}`],
  );
  assertEquals(up.count(/\/download\//), 300);
  const peak = up.maxInflight(/\/download\//);
  assert(peak <= 8 && peak >= 2, `${peak} documents at once`);
});

Deno.test("a module answer with no Content-Length that never ends: 504 at the deadline, upstream request aborted", async () => {
  const endless = endlessBody(512, 50); // ~10 KB/s: stays under the size cap for the whole test
  await using up = startHostile(() =>
    new Response(endless.body, { headers: { "content-type": "application/json" } })
  );
  await using dir = await tempDir();
  await using t = await appOn(up, dir.path, {}, { requestDeadlineMs: 600 });
  const res = await t.get(`/v1/modules/${H}/evil/mod/aws/versions`);
  assertEquals(res.status, 504);
  await res.body?.cancel();
  // Aborted with the answer, not at the 8 s upstream timeout.
  let timer: ReturnType<typeof setTimeout> | undefined;
  const stopped = await Promise.race([
    endless.cancelled.then(() => true),
    new Promise<false>((r) => timer = setTimeout(() => r(false), 2_000)),
  ]);
  clearTimeout(timer);
  assert(stopped, "the upstream module request went on after the 504");
});

Deno.test("a module answer over limits.moduleAnswer is refused while reading: 502", async () => {
  const endless = endlessBody(16 * 1024, 1);
  await using up = startHostile(() => new Response(endless.body));
  await using dir = await tempDir();
  await using t = await appOn(up, dir.path, { limits: { moduleAnswer: "32KB" } });
  const res = await t.get(`/v1/modules/${H}/evil/mod/aws/1.0.0/download`);
  assertEquals(res.status, 502);
  assertMatch(
    errorOf(await jsonOf(res)),
    new RegExp(`module answer over ${t.config.limits.moduleAnswerBytes} bytes`),
  );
  await endless.cancelled;
  // A module version list is a metadata document: limits.metadataDocument bounds it.
  const endless2 = endlessBody(16 * 1024, 1);
  await using up3 = startHostile(() => new Response(endless2.body));
  await using dir3 = await tempDir();
  await using t3 = await appOn(up3, dir3.path, { limits: { metadataDocument: "64KB" } });
  const res3 = await t3.get(`/v1/modules/${H}/evil/mod/aws/versions`);
  assertEquals(res3.status, 502);
  assertMatch(
    errorOf(await jsonOf(res3)),
    new RegExp(`module answer over ${t3.config.limits.metadataDocumentBytes} bytes`),
  );
  await endless2.cancelled;
  // A declared size over the cap is refused before reading.
  await using up2 = startHostile(() =>
    new Response("{}", {
      headers: { "content-length": "2", "x-terraform-get": "x".repeat(40_000) },
    })
  );
  await using dir2 = await tempDir();
  await using t2 = await appOn(up2, dir2.path, { limits: { moduleAnswer: "32KB" } });
  const res2 = await t2.get(`/v1/modules/${H}/evil/mod/aws/1.0.0/download`);
  assertEquals(res2.status, 502);
  await res2.body?.cancel();
});

const ONE = [{
  namespace: "example",
  type: "alpha",
  versions: [{ version: "1.0.0", platforms: ["linux_amd64", "darwin_arm64"] }],
}];

Deno.test("platforms a cached version does not list: 100 requests, no upstream call, warm answers kept", async () => {
  await using t = await mirrorFixture({ providers: ONE });
  const warm = await t.get(`/${H}/example/alpha/1.0.0.json`);
  assertEquals(warm.status, 200);
  const warmBytes = await bytesOf(warm);
  const before = t.fake.count();
  const generation = t.app.cache.refs.generation;
  for (let i = 0; i < 50; i++) {
    const a = await t.get(`/${H}/example/alpha/terraform-provider-alpha_1.0.0_plan9_amd64.zip`);
    assertEquals(a.status, 404);
    await a.body?.cancel();
    const d = await t.get(`/v1/providers/${H}/example/alpha/1.0.0/download/plan9/arm64`);
    assertEquals(d.status, 404);
    await d.body?.cancel();
  }
  assertEquals(t.fake.count() - before, 0, "unlisted platforms went upstream");
  assertEquals(t.app.cache.refs.generation, generation, "kept answers were invalidated");
  const again = await t.get(`/${H}/example/alpha/1.0.0.json`);
  assertEquals(again.headers.get("x-repoxy-cache"), "hit");
  assertEquals(sha256Hex(await bytesOf(again)), sha256Hex(warmBytes));
  assertEquals(t.fake.count() - before, 0);
});

Deno.test("unknown providers are remembered for negativeTtl, bounded by negativeEntries", async () => {
  let now = 1_000_000;
  await using t = await mirrorFixture({
    providers: ONE,
    config: { limits: { negativeTtl: "30s", negativeEntries: 100 } },
    deps: { now: () => now },
  });
  const versions = (r: { path: string }) => r.path.endsWith("/versions");
  for (let i = 0; i < 100; i++) {
    const res = await t.get(`/${H}/nobody/ghost/index.json`);
    assertEquals(res.status, 404);
    await res.body?.cancel();
  }
  assertEquals(t.fake.count(versions), 1);
  // Thousands of distinct made-up providers: one request each, bounded memory.
  for (let i = 0; i < 1_000; i++) {
    const res = await t.get(`/${H}/nobody/ghost${i}/index.json`);
    assertEquals(res.status, 404);
    await res.body?.cancel();
  }
  assertEquals(t.fake.count(versions), 1_001);
  const app = t.app as unknown as { source: { deps: { metadata: { negativeEntries: number } } } };
  assert(app.source.deps.metadata.negativeEntries <= 100);
  assert(t.app.cache.refs.memoryBytes <= t.config.limits.metadataMemoryBytes);
  // The most recent is still remembered; past the TTL it is asked again.
  const recent = await t.get(`/${H}/nobody/ghost999/index.json`);
  await recent.body?.cancel();
  assertEquals(t.fake.count(versions), 1_001);
  now += 31_000;
  const later = await t.get(`/${H}/nobody/ghost999/index.json`);
  assertEquals(later.status, 404);
  await later.body?.cancel();
  assertEquals(t.fake.count(versions), 1_002);
});

Deno.test("an unknown version refreshes the list at most every 30 s, and an unchanged list keeps kept answers", async () => {
  let now = 1_000_000;
  await using t = await mirrorFixture({ providers: ONE, deps: { now: () => now } });
  const versions = (r: { path: string }) => r.path.endsWith("/versions");
  const warm = await t.get(`/${H}/example/alpha/index.json`);
  await warm.body?.cancel();
  await t.app.settle(); // the list's read-ahead stores the newest release's documents
  const generation = t.app.cache.refs.generation;
  for (let i = 0; i < 50; i++) {
    const res = await t.get(`/${H}/example/alpha/9.9.${i}.json`);
    assertEquals(res.status, 404);
    await res.body?.cancel();
  }
  assertEquals(t.fake.count(versions), 2, "one listing, one forced refresh");
  assertEquals(
    t.app.cache.refs.generation,
    generation,
    "the same list bytes bumped the generation",
  );
  now += 31_000;
  const res = await t.get(`/${H}/example/alpha/9.9.9.json`);
  await res.body?.cancel();
  assertEquals(t.fake.count(versions), 3);
});

Deno.test("refs.put moves the generation only when the stored bytes change", async () => {
  await using dir = await tempDir();
  const refs = new RefsStore(new DiskStorage(dir.path, `${dir.path}/tmp`));
  await Deno.mkdir(`${dir.path}/tmp`, { recursive: true });
  await refs.put("a/versions", { fetchedAt: 1, url: "https://x/v", body: "{}" });
  const g = refs.generation;
  await refs.put("a/versions", { fetchedAt: 2, url: "https://x/v", body: "{}" });
  assertEquals(refs.generation, g);
  assertEquals((await refs.get("a/versions"))?.fetchedAt, 2);
  assertEquals((await refs.read("a/versions"))?.fetchedAt, 2);
  await refs.put("a/versions", { fetchedAt: 3, url: "https://x/v", body: "[]" });
  assertEquals(refs.generation, g + 1);
  // A fresh store (memory empty) compares with what is on disk.
  const other = new RefsStore(new DiskStorage(dir.path, `${dir.path}/tmp`));
  await other.put("a/versions", { fetchedAt: 4, url: "https://x/v", body: "[]" });
  assertEquals(other.generation, 0);
});

Deno.test("presigned download URLs are kept out of refs/ and archives still download", async () => {
  const secret = "X-Amz-Signature=deadbeefsecret";
  const seen: string[] = [];
  // deno-lint-ignore prefer-const
  let fake: { releaseUrl: string } | undefined;
  await using t = await mirrorFixture({
    providers: ONE,
    registry: {
      redirectDownloads: false,
      extraDownloadFields: ({ namespace, type, version, os, arch }) => {
        const dir = `${fake!.releaseUrl}/files/${namespace}/${type}/${version}`;
        return {
          download_url: `${dir}/terraform-provider-${type}_${version}_${os}_${arch}.zip?${secret}`,
          shasums_url: `${dir}/SHA256SUMS?${secret}`,
          shasums_signature_url: `${dir}/SHA256SUMS.sig?${secret}`,
        };
      },
      intercept: (req, server) => {
        if (server === "release") seen.push(new URL(req.url).search);
        return undefined;
      },
    },
  });
  fake = t.fake;
  const v = await t.get(`/${H}/example/alpha/1.0.0.json`);
  assertEquals(v.status, 200);
  await v.body?.cancel();
  const a = t.fake.archive("alpha", "1.0.0", "darwin_arm64");
  const res = await t.get(`/${H}/example/alpha/${a.filename}`);
  assertEquals(res.status, 200);
  assertEquals(sha256Hex(await bytesOf(res)), a.sha256);
  await t.app.settle();
  // The upstream got its signed URLs, each once...
  assertEquals(seen, [`?${secret}`, `?${secret}`, `?${secret}`]);
  // ...and the document was fetched once: the fetcher used it before it was stored redacted.
  assertEquals(t.fake.count((r) => r.path.endsWith("/download/darwin/arm64")), 1);
  // ...and nothing under refs/ holds one.
  const found: string[] = [];
  const walk = async (d: string) => {
    for await (const e of Deno.readDir(d)) {
      const p = `${d}/${e.name}`;
      if (e.isDirectory) await walk(p);
      else if ((await Deno.readTextFile(p)).includes("deadbeef")) found.push(p);
    }
  };
  await walk(`${t.dir.path}/refs`);
  assertEquals(found, []);
  // Once stored (redacted), an archive download asks for the document again to get a usable URL.
  const b = t.fake.archive("alpha", "1.0.0", "linux_amd64");
  const res2 = await t.get(`/${H}/example/alpha/${b.filename}`);
  assertEquals(res2.status, 200);
  assertEquals(sha256Hex(await bytesOf(res2)), b.sha256);
  await t.app.settle();
  assertEquals(t.fake.count((r) => r.path.endsWith("/download/linux/amd64")), 2);
  assertEquals(seen.at(-1), `?${secret}`);
  // The registry protocol's download document is still served from the redacted copy.
  const d = await t.get(`/v1/providers/${H}/example/alpha/1.0.0/download/darwin/arm64`);
  const doc = await jsonOf(d) as { download_url: string; shasum: string };
  assertEquals(doc.shasum, a.sha256);
  assert(!doc.download_url.includes("deadbeef"));
  found.length = 0;
  await walk(`${t.dir.path}/refs`);
  assertEquals(found, []);
});

Deno.test("a download document the upstream 404s is asked for once per negativeTtl", async () => {
  await using t = await mirrorFixture({
    providers: ONE,
    registry: {
      intercept: (req) =>
        new URL(req.url).pathname.endsWith("/download/darwin/arm64")
          ? Response.json({ errors: ["Not Found"] }, { status: 404 })
          : undefined,
    },
  });
  const docs = (r: { path: string }) => r.path.endsWith("/download/darwin/arm64");
  for (let i = 0; i < 50; i++) {
    const res = await t.get(`/v1/providers/${H}/example/alpha/1.0.0/download/darwin/arm64`);
    assertEquals(res.status, 404);
    await res.body?.cancel();
  }
  assertEquals(t.fake.count(docs), 1);
});

Deno.test("ByteLru evicts by bytes, oldest first, and keeps nothing bigger than its bound", () => {
  const lru = new ByteLru<string, string>(100);
  lru.set("a", "A", 40);
  lru.set("b", "B", 40);
  lru.get("a"); // a is now the newest
  lru.set("c", "C", 40);
  assertEquals([lru.has("a"), lru.has("b"), lru.has("c")], [true, false, true]);
  assertEquals(lru.bytes, 80);
  assertEquals(lru.set("huge", "H", 101), false);
  assertEquals(lru.bytes, 80);
  lru.resize(50);
  assertEquals(lru.size, 1);
  assertEquals(lru.bytes, 40);
});

Deno.test("NegativeCache forgets after its TTL and holds at most its bound", () => {
  let now = 0;
  const neg = new NegativeCache(1_000, 3, () => now);
  for (const k of ["a", "b", "c", "d"]) neg.add(k, `no ${k}`);
  assertEquals(neg.size, 3);
  assertEquals(neg.has("a"), false);
  assertEquals(neg.get("d"), "no d");
  now = 1_000;
  assertEquals(neg.has("d"), false);
});

Deno.test("a version list naming no platforms: download documents are asked upstream, 404s remembered", async () => {
  await using up = startHostile((path) => {
    if (path === "/v1/providers/big/bare/versions") {
      return Response.json({ versions: [{ version: "1.0.0", protocols: ["5.0"] }] });
    }
    if (path === "/v1/providers/big/bare/1.0.0/download/linux/amd64") {
      return new Response(downloadDoc("linux", "amd64"));
    }
    return Response.json({ errors: ["Not Found"] }, { status: 404 });
  });
  await using dir = await tempDir();
  await using t = await appOn(up, dir.path);
  const ok = await t.get(`/v1/providers/${H}/big/bare/1.0.0/download/linux/amd64`);
  assertEquals(ok.status, 200);
  assertEquals((await jsonOf(ok) as { os: string }).os, "linux");
  for (let i = 0; i < 20; i++) {
    const res = await t.get(`/v1/providers/${H}/big/bare/1.0.0/download/plan9/arm64`);
    assertEquals(res.status, 404);
    await res.body?.cancel();
  }
  assertEquals(up.count(/\/download\/plan9\/arm64$/), 1);
});

Deno.test("{version}.json: one broken platform document ends the fan-out (the other workers stop too)", async () => {
  const names = platformNames(700);
  await using up = manyPlatforms(700, { delayMs: 10, broken: names[20]! });
  await using dir = await tempDir();
  await using t = await appOn(up, dir.path, { limits: { platformConcurrency: 4 } });
  const res = await t.get(`/${H}/big/wide/1.0.0.json`);
  assertEquals(res.status, 502);
  await res.body?.cancel();
  await sleep(300); // long enough for ~100 more documents if the workers went on
  await t.app.settle();
  const n = up.count(/\/download\//);
  assert(n <= 21 + 4, `${n} documents fetched after the broken one`);
  assert(up.maxInflight(/\/download\//) >= 2, "fetched one at a time");
});

Deno.test("{version}.json over a real socket: the fan-out stops when the only client disconnects", async () => {
  await using up = manyPlatforms(700, { delayMs: 20 });
  await using dir = await tempDir();
  await using t = await appOn(up, dir.path, { limits: { platformConcurrency: 2 } });
  const ac = new AbortController();
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, signal: ac.signal, onListen() {} },
    (req) => t.app.handle(req),
  );
  const dl = /\/download\//;
  try {
    const client = new AbortController();
    const pending = fetch(`http://127.0.0.1:${server.addr.port}/${H}/big/wide/1.0.0.json`, {
      signal: client.signal,
    }).catch((e) => e);
    while (up.count(dl) < 10) await sleep(20);
    client.abort(); // long before the 9.5 s deadline
    await pending;
    await sleep(150);
    const atGone = up.count(dl);
    await sleep(500);
    assert(up.count(dl) - atGone <= 2, `${up.count(dl) - atGone} documents after the client left`);
    assert(up.count(dl) < 700);
  } finally {
    ac.abort();
    await server.finished;
    await t.app.settle();
  }
});

Deno.test("{version}.json of several hostile versions at once: platformConcurrency bounds them together", async () => {
  await using up = manyPlatforms(700, { delayMs: 20 });
  await using dir = await tempDir();
  await using t = await appOn(up, dir.path, { limits: { platformConcurrency: 2 } }, {
    requestDeadlineMs: 700,
  });
  const answers = await Promise.all(
    ["1.0.0", "2.0.0", "3.0.0"].map((v) => t.get(`/${H}/big/wide/${v}.json`)),
  );
  for (const a of answers) {
    assertEquals(a.status, 504);
    await a.body?.cancel();
  }
  await t.app.settle();
  assert(up.count(FANOUT) >= 6, `${up.count(FANOUT)} documents`);
  assert(up.maxInflight(FANOUT) <= 2, `${up.maxInflight(FANOUT)} documents at once`);
});

Deno.test("URLs an upstream names that do not parse (redirect, shasums_url, download_url): 502 naming the upstream, not 500", async () => {
  const bad = "http://[::1";
  const zip = "terraform-provider-b_1.0.0_linux_amd64.zip";
  const sha = sha256Hex(new TextEncoder().encode("zip"));
  await using up = startHostile((path) => {
    if (path.startsWith("/v1/providers/r/")) {
      return new Response(null, { status: 302, headers: { location: bad } });
    }
    if (path === "/SHA256SUMS") return new Response(`${sha}  ${zip}\n`);
    if (path.endsWith("/versions")) {
      return Response.json({
        versions: [{ version: "1.0.0", platforms: [{ os: "linux", arch: "amd64" }] }],
      });
    }
    const good = path.startsWith("/v1/providers/u/");
    return Response.json({
      os: "linux",
      arch: "amd64",
      filename: zip,
      download_url: bad,
      shasums_url: good ? "/SHA256SUMS" : bad,
      ...(good ? {} : { shasums_signature_url: bad }),
      shasum: sha,
    });
  });
  await using dir = await tempDir();
  // registry.opentofu.org without keys may be unsigned: the download_url is reached.
  const T = "registry.opentofu.org";
  await using t = await makeTestApp(undefined, dir.path, {
    upstreams: { [H]: { url: up.url }, [T]: { url: up.url } },
  });
  for (
    const [path, host, what] of [
      [`/${H}/r/b/index.json`, H, "redirect"],
      [`/${H}/a/b/1.0.0.json`, H, "shasums_url"],
      [`/${T}/u/b/${zip}`, T, "download_url"],
    ]
  ) {
    const res = await t.get(path!);
    assertEquals(res.status, 502, path);
    assertMatch(errorOf(await jsonOf(res)), new RegExp(`${host}.*malformed ${what}`));
  }
});

Deno.test("a SHA256SUMS.sig that never ends is cut at 64 KiB (MAX_SIGNATURE_BYTES), not at limits.metadataDocument", async () => {
  const zip = "terraform-provider-b_1.0.0_linux_amd64.zip";
  const sha = sha256Hex(new TextEncoder().encode("zip"));
  const endless = endlessBody(16 * 1024, 0);
  await using up = startHostile((path) => {
    if (path === "/SHA256SUMS") return new Response(`${sha}  ${zip}\n`);
    if (path === "/SHA256SUMS.sig") return new Response(endless.body);
    if (path.endsWith("/versions")) {
      return Response.json({
        versions: [{ version: "1.0.0", platforms: [{ os: "linux", arch: "amd64" }] }],
      });
    }
    return Response.json({
      os: "linux",
      arch: "amd64",
      filename: zip,
      download_url: `/${zip}`,
      shasums_url: "/SHA256SUMS",
      shasums_signature_url: "/SHA256SUMS.sig",
      shasum: sha,
      signing_keys: { gpg_public_keys: [{ ascii_armor: "not read: the .sig fails first" }] },
    });
  });
  await using dir = await tempDir();
  await using t = await appOn(up, dir.path);
  const res = await t.get(`/${H}/a/b/1.0.0.json`);
  assertEquals(res.status, 502);
  assertMatch(errorOf(await jsonOf(res)), /SHA256SUMS\.sig.*65536 bytes/);
  await endless.cancelled;
  // What was pulled is socket buffers, not the 8 MiB document cap read into memory.
  assert(endless.pulled() < 8 * 1024 * 1024, `pulled ${endless.pulled()} bytes`);
});
