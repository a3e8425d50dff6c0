/**
 * Upstream failures: hangs, refusals, 5xx, 429, malformed answers, bodies cut
 * mid-way; bounded retries; stale metadata instead of errors; clear 502/504.
 */
import { assert, assertEquals, assertMatch } from "../lib/deps/assert.ts";
import { join } from "../lib/deps/path.ts";
import { startFakeRegistry } from "./fake_registry.ts";
import {
  bytesOf,
  exists,
  jsonOf,
  makeTestApp,
  mirrorFixture,
  tempDir,
  tempLeftovers,
  TWO_PROVIDERS,
} from "./_helpers.ts";
import { brokenBody, gate } from "./_slow.ts";

const H = "registry.terraform.io";

Deno.test("a hanging upstream gets a 504 within the deadline, naming the upstream", async () => {
  const g = gate();
  await using t = await mirrorFixture({
    providers: TWO_PROVIDERS,
    registry: {
      intercept: async (req) => {
        if (new URL(req.url).pathname.endsWith("/versions")) {
          await g.wait;
          return new Response("late", { status: 503 });
        }
      },
    },
    config: { upstreamTimeout: "1s" },
  });
  const started = performance.now();
  const res = await t.get(`/${H}/example/alpha/index.json`);
  const ms = performance.now() - started;
  assertEquals(res.status, 504);
  assertMatch(
    (await jsonOf(res) as { errors: string[] }).errors[0]!,
    /127\.0\.0\.1:\d+ did not answer in time/,
  );
  assert(ms < 3_000, `answered after ${ms} ms`);
  g.open();
});

Deno.test("a hanging upstream with a stored copy: the stale copy is served quickly", async () => {
  let hang = false;
  const g = gate();
  let now = 0;
  await using t = await mirrorFixture({
    providers: TWO_PROVIDERS,
    registry: {
      intercept: async (req) => {
        if (hang && new URL(req.url).pathname.endsWith("/versions")) {
          await g.wait;
          return new Response("late", { status: 503 });
        }
      },
    },
    deps: { now: () => now },
  });
  const fresh = await jsonOf(await t.get(`/${H}/example/alpha/index.json`));
  hang = true;
  now += 20 * 60_000;
  const started = performance.now();
  const res = await t.get(`/${H}/example/alpha/index.json`);
  const ms = performance.now() - started;
  assertEquals(res.status, 200);
  assertEquals(res.headers.get("x-repoxy-cache"), "stale");
  assertEquals(await jsonOf(res), fresh);
  assert(ms < 4_000, `stale answer took ${ms} ms`);
  g.open();
});

Deno.test("5xx answers are retried a bounded number of times", async () => {
  let failures = 2;
  await using t = await mirrorFixture({
    providers: TWO_PROVIDERS,
    registry: {
      intercept: (req) => {
        if (new URL(req.url).pathname.endsWith("/versions") && failures-- > 0) {
          return new Response("oops", { status: 500 });
        }
      },
    },
  });
  const { fake } = t;
  const res = await t.get(`/${H}/example/alpha/index.json`);
  assertEquals(res.status, 200);
  await res.body?.cancel();
  assertEquals(fake.count((r) => r.path.endsWith("/versions")), 3);

  // Always failing: three attempts, then a 502 naming the upstream.
  failures = 1_000;
  const res2 = await t.get(`/${H}/example/beta/index.json`);
  assertEquals(res2.status, 502);
  assertMatch(
    (await jsonOf(res2) as { errors: string[] }).errors[0]!,
    /upstream 127\.0\.0\.1:\d+ answered 500/,
  );
  assertEquals(fake.count((r) => r.path === "/v1/providers/example/beta/versions"), 3);
});

Deno.test("429 with Retry-After is honoured", async () => {
  let limited = 1;
  const waits: number[] = [];
  await using t = await mirrorFixture({
    providers: TWO_PROVIDERS,
    registry: {
      intercept: (req) => {
        if (new URL(req.url).pathname.endsWith("/versions") && limited-- > 0) {
          return new Response("slow down", { status: 429, headers: { "retry-after": "1" } });
        }
      },
    },
    deps: {
      sleep: (ms) => {
        waits.push(ms);
        return Promise.resolve();
      },
    },
  });
  const { fake } = t;
  const res = await t.get(`/${H}/example/alpha/index.json`);
  assertEquals(res.status, 200);
  await res.body?.cancel();
  assertEquals(waits, [1000]);
  assertEquals(fake.count((r) => r.path.endsWith("/versions")), 2);
});

Deno.test("malformed JSON and refused connections give a 502 naming the upstream", async () => {
  await using t = await mirrorFixture({
    providers: TWO_PROVIDERS,
    registry: {
      intercept: (req) => {
        if (new URL(req.url).pathname.endsWith("/versions")) {
          return new Response("<html>maintenance</html>", {
            headers: { "content-type": "text/html" },
          });
        }
      },
    },
  });
  const res = await t.get(`/${H}/example/alpha/index.json`);
  assertEquals(res.status, 502);
  assertMatch(
    (await jsonOf(res) as { errors: string[] }).errors[0]!,
    /upstream registry\.terraform\.io sent a malformed version list/,
  );

  // A registry on a port nothing listens on.
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  await using dir2 = await tempDir();
  await using t2 = await makeTestApp(undefined, dir2.path, {
    upstreams: { [H]: { url: `http://127.0.0.1:${port}` } },
  });
  const res2 = await t2.get(`/${H}/example/alpha/index.json`);
  assertEquals(res2.status, 502);
  assertMatch(
    (await jsonOf(res2) as { errors: string[] }).errors[0]!,
    new RegExp(`cannot reach upstream 127\\.0\\.0\\.1:${port}`),
  );
});

Deno.test("stale metadata is served, marked, when the upstream fails after the TTL", async () => {
  let down = false;
  let now = 0;
  await using t = await mirrorFixture({
    providers: TWO_PROVIDERS,
    registry: { intercept: () => down ? new Response("down", { status: 503 }) : undefined },
    deps: { now: () => now },
  });
  const first = await jsonOf(await t.get(`/${H}/example/beta/2.3.4.json`));
  await (await t.get(`/${H}/example/beta/index.json`)).body?.cancel();
  down = true;
  now += 3_600_000;
  const res = await t.get(`/${H}/example/beta/index.json`);
  assertEquals(res.status, 200);
  assertEquals(res.headers.get("x-repoxy-cache"), "stale");
  await res.body?.cancel();
  const v = await t.get(`/${H}/example/beta/2.3.4.json`);
  assertEquals(v.status, 200);
  assertEquals(await jsonOf(v), first);
  assert(t.log.records.some((r) => r.msg === "upstream failed; serving stale metadata"));
});

Deno.test("an archive cut off mid-body is not cached; the next request gets correct bytes", async () => {
  let cut = true;
  await using fake = await startFakeRegistry({
    providers: TWO_PROVIDERS,
    intercept: (req) => {
      const path = new URL(req.url).pathname;
      if (cut && path.startsWith("/files/") && path.endsWith(".zip")) {
        const a = fake.archives.find((x) => path.endsWith(x.filename))!;
        return new Response(brokenBody(a.bytes, 100), {
          headers: { "content-length": String(a.bytes.length) },
        });
      }
    },
  });
  await using dir = await tempDir();
  await using t = await makeTestApp(fake, dir.path);
  const fa = fake.archive("beta", "2.3.4", "linux_amd64");
  const res = await t.get(`/${H}/example/beta/${fa.filename}`);
  let failed = false;
  try {
    await bytesOf(res);
  } catch {
    failed = true;
  }
  assert(failed, "the client must see a failed transfer, not a short archive");
  await t.app.settle();
  const stored = join(dir.path, "packages", H, "example", "beta", fa.filename);
  assertEquals(await exists(stored), false);
  assertEquals(await tempLeftovers(dir.path), []);

  cut = false;
  const again = await t.get(`/${H}/example/beta/${fa.filename}`);
  assertEquals(await bytesOf(again), fa.bytes);
  await t.app.settle();
  assertEquals(await Deno.readFile(stored), fa.bytes);
});

Deno.test("a version missing from the cached list triggers an immediate refresh", async () => {
  const providers = structuredClone(TWO_PROVIDERS);
  providers[1]!.versions.push({ version: "2.4.0", platforms: ["linux_amd64"] });
  await using fake = await startFakeRegistry({ providers });
  // Hidden at first: the release appears upstream after Repoxy cached the list.
  const release = providers[1]!.versions.pop()!;
  await using dir = await tempDir();
  await using t = await makeTestApp(fake, dir.path);
  await (await t.get(`/${H}/example/beta/index.json`)).body?.cancel();
  providers[1]!.versions.push(release);
  const res = await t.get(`/${H}/example/beta/2.4.0.json`);
  assertEquals(res.status, 200);
  assertEquals(Object.keys((await jsonOf(res) as { archives: object }).archives), ["linux_amd64"]);
  const idx = await jsonOf(await t.get(`/${H}/example/beta/index.json`)) as { versions: object };
  assertEquals(Object.keys(idx.versions), ["2.4.0", "2.3.4"]);
  assertEquals(fake.count((r) => r.path.endsWith("/beta/versions")), 2);
  // Asking again for a version that does not exist does not hammer the upstream.
  for (let i = 0; i < 5; i++) {
    const r = await t.get(`/${H}/example/beta/9.9.9.json`);
    assertEquals(r.status, 404);
    await r.body?.cancel();
  }
  assertEquals(fake.count((r) => r.path.endsWith("/beta/versions")), 2);
});

Deno.test("an archive download that stalls mid-body is given up after the idle timeout", async () => {
  const g = gate();
  await using fake = await startFakeRegistry({
    providers: TWO_PROVIDERS,
    intercept: (req) => {
      const path = new URL(req.url).pathname;
      if (path.startsWith("/files/") && path.endsWith(".zip")) {
        const a = fake.archives.find((x) => path.endsWith(x.filename))!;
        let sent = false;
        // Half the archive, then silence until the test ends.
        const body = new ReadableStream<Uint8Array>({
          async pull(c) {
            if (!sent) {
              sent = true;
              c.enqueue(a.bytes.slice(0, a.bytes.length >> 1));
              return;
            }
            await g.wait;
            c.close();
          },
        });
        return new Response(body, { headers: { "content-length": String(a.bytes.length) } });
      }
    },
  });
  await using dir = await tempDir();
  await using t = await makeTestApp(fake, dir.path, {}, { downloadIdleTimeoutMs: 300 });
  const fa = fake.archive("alpha", "1.1.0", "darwin_arm64");
  const started = performance.now();
  const res = await t.get(`/${H}/example/alpha/${fa.filename}`);
  let failed = false;
  try {
    await bytesOf(res);
  } catch {
    failed = true;
  }
  assert(failed, "the stalled transfer must fail, not hang");
  assert(performance.now() - started < 5_000);
  await t.app.settle();
  assertEquals(await exists(join(dir.path, "packages", H, "example", "alpha", fa.filename)), false);
  assertEquals(await tempLeftovers(dir.path), []);
  assert(
    t.log.records.some((r) =>
      r.msg === "archive download failed; nothing cached" &&
      /stalled for 300 ms/.test(String(r.error))
    ),
  );
  g.open();
});
