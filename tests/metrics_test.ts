/**
 * `/-/metrics`: the exposition format itself, then exact values after known
 * traffic against the fake registry.
 */
import { assert, assertEquals, assertMatch, assertThrows } from "../lib/deps/assert.ts";
import { Counter, Gauge, Histogram, Registry } from "../lib/ops/metrics.ts";
import { isUpstreamFailure } from "../lib/ops/telemetry.ts";
import { VERSION } from "../lib/base/version.ts";
import { parseExposition } from "./_prom.ts";
import { startFakeRegistry } from "./fake_registry.ts";
import {
  bytesOf,
  makeTestApp,
  mirrorFixture,
  tempDir,
  type TestApp,
  TWO_PROVIDERS,
} from "./_helpers.ts";

const H = "registry.terraform.io";

async function scrape(t: TestApp) {
  const res = await t.get("/-/metrics");
  assertEquals(res.status, 200);
  assertEquals(res.headers.get("content-type"), "text/plain; version=0.0.4; charset=utf-8");
  return parseExposition(await res.text());
}

Deno.test("Registry renders counters, gauges and histograms in the text format", () => {
  const r = new Registry();
  const c = r.register(new Counter("x_total", "Things\nand more", ["kind"]));
  c.inc({ kind: 'a"b\\c\nd' }, 2);
  c.inc({ kind: "plain" });
  r.register(new Gauge("g", "A gauge", [], (g) => g.set({}, 1.5)));
  const h = r.register(new Histogram("h_seconds", "A histogram", [0.1, 1], ["route"]));
  h.observe({ route: "r" }, 0.05);
  h.observe({ route: "r" }, 0.5);
  h.observe({ route: "r" }, 7);
  assertEquals(
    r.render(),
    [
      "# HELP x_total Things\\nand more",
      "# TYPE x_total counter",
      'x_total{kind="a\\"b\\\\c\\nd"} 2',
      'x_total{kind="plain"} 1',
      "# HELP g A gauge",
      "# TYPE g gauge",
      "g 1.5",
      "# HELP h_seconds A histogram",
      "# TYPE h_seconds histogram",
      'h_seconds_bucket{route="r",le="0.1"} 1',
      'h_seconds_bucket{route="r",le="1"} 2',
      'h_seconds_bucket{route="r",le="+Inf"} 3',
      'h_seconds_sum{route="r"} 7.55',
      'h_seconds_count{route="r"} 3',
      "",
    ].join("\n"),
  );
  // The test parser must agree, including the escaped label value.
  const p = parseExposition(r.render());
  assertEquals(p.value("x_total", { kind: 'a"b\\c\nd' }), 2);
  assertEquals(c.sum(), 3);
  assertThrows(() => c.inc({ kind: "a" }, -1), RangeError);
  assertThrows(() => c.inc({}), TypeError);
  assertThrows(() => r.register(new Counter("x_total", "again")), TypeError);
  assertThrows(() => new Counter("bad-name", "x"), TypeError);
});

Deno.test("parseExposition rejects what a scraper would reject", () => {
  assertThrows(() => parseExposition("x 1\n"), /before its TYPE/);
  assertThrows(() => parseExposition("# TYPE x counter\nx 1\nx 2\n"), /duplicate/);
  assertThrows(() => parseExposition('# TYPE x counter\nx{a="1} 1\n'), /unterminated/);
  assertThrows(
    () =>
      parseExposition(
        '# TYPE h histogram\nh_bucket{le="1"} 2\nh_bucket{le="+Inf"} 1\nh_sum 1\nh_count 1\n',
      ),
    /cumulative/,
  );
  assertThrows(
    () => parseExposition('# TYPE h histogram\nh_bucket{le="+Inf"} 2\nh_sum 1\nh_count 3\n'),
    /differs/,
  );
});

Deno.test("/-/metrics counts requests, cache results, bytes and upstream calls exactly", async () => {
  await using t = await mirrorFixture({ providers: TWO_PROVIDERS });
  const { fake } = t;
  const fa = fake.archive("alpha", "1.1.0", "linux_amd64");

  const indexBytes = [
    (await bytesOf(await t.get(`/${H}/example/alpha/index.json`))).length, // miss
    (await bytesOf(await t.get(`/${H}/example/alpha/index.json`))).length, // hit
  ];
  const versionBytes = (await bytesOf(await t.get(`/${H}/example/alpha/1.1.0.json`))).length;
  assertEquals(
    (await bytesOf(await t.get(`/${H}/example/alpha/${fa.filename}`))).length,
    1 * fa.bytes.length,
  );
  await t.app.settle();
  const hit = await t.get(`/${H}/example/alpha/${fa.filename}`);
  assertEquals(hit.headers.get("x-repoxy-cache"), "hit");
  assertEquals((await bytesOf(hit)).length, fa.bytes.length);
  const head = await t.get(`/${H}/example/alpha/${fa.filename}`, { method: "HEAD" });
  assertEquals(head.body, null);
  const missing = await t.get("/nothing-here");
  assertEquals(missing.status, 404);
  const notFoundBytes = (await bytesOf(missing)).length;
  await bytesOf(await t.get("/-/healthz"));

  const m = await scrape(t);
  const req = (route: string, status: string) =>
    m.value("repoxy_http_requests_total", { route, status });
  assertEquals(req("mirrorIndex", "200"), 2);
  assertEquals(req("mirrorVersion", "200"), 1);
  assertEquals(req("archive", "200"), 3);
  assertEquals(req("none", "404"), 1);
  assertEquals(req("health", "200"), 1);
  assert(!m.has("repoxy_http_requests_total", { route: "metrics", status: "200" }));
  assertEquals(
    m.samples.filter((s) => s.name === "repoxy_http_requests_total").reduce(
      (n, s) => n + s.value,
      0,
    ),
    8,
  );

  const cache = (route: string, result: string) =>
    m.value("repoxy_cache_lookups_total", { route, result });
  assertEquals(cache("mirrorIndex", "miss"), 1);
  assertEquals(cache("mirrorIndex", "hit"), 1);
  assertEquals(cache("mirrorVersion", "miss"), 1);
  assertEquals(cache("archive", "miss"), 1);
  assertEquals(cache("archive", "hit"), 2);
  assert(!m.has("repoxy_cache_lookups_total", { route: "archive", result: "stale" }));

  const bytes = (route: string) => m.value("repoxy_http_response_bytes_total", { route });
  assertEquals(bytes("archive"), 2 * fa.bytes.length);
  assertEquals(bytes("mirrorIndex"), indexBytes[0]! + indexBytes[1]!);
  assertEquals(bytes("mirrorVersion"), versionBytes);
  assertEquals(bytes("none"), notFoundBytes);

  assertEquals(m.value("repoxy_http_request_duration_seconds_count", { route: "archive" }), 3);
  assertEquals(m.value("repoxy_http_request_duration_seconds_count", { route: "mirrorIndex" }), 2);

  // discovery, versions, download document, SHA256SUMS, .sig, archive (after one 302)
  const up = (status: string) => m.value("repoxy_upstream_requests_total", { upstream: H, status });
  assertEquals(up("200"), 6);
  assertEquals(up("302"), 1);
  assertEquals(up("200") + up("302"), fake.count());
  assertEquals(m.value("repoxy_upstream_request_duration_seconds_count", { upstream: H }), 7);
  assertEquals(m.value("repoxy_upstream_errors_total", { upstream: H, reason: "no_response" }), 0);
  assertEquals(m.value("repoxy_upstream_errors_total", { upstream: H, reason: "bad_status" }), 0);

  assertEquals(m.value("repoxy_downloads_in_flight"), 0);
  assertEquals(m.value("repoxy_cache_archives"), 1);
  assertEquals(m.value("repoxy_cache_size_bytes"), fa.bytes.length);
  assertEquals(m.value("repoxy_build_info", { version: VERSION }), 1);
  assert(m.value("process_resident_memory_bytes") > 1_000_000);
  assert(m.value("deno_heap_used_bytes") > 0);
  assertEquals(m.types.get("repoxy_http_requests_total"), "counter");
  assertEquals(m.types.get("repoxy_upstream_request_duration_seconds"), "histogram");
  assertEquals(m.types.get("repoxy_cache_size_bytes"), "gauge");

  // The first scrape is counted in the second.
  const again = await scrape(t);
  assertEquals(again.value("repoxy_http_requests_total", { route: "metrics", status: "200" }), 1);
  assert(again.value("repoxy_http_response_bytes_total", { route: "metrics" }) > 1000);
});

Deno.test("/-/metrics counts upstream failures and stale answers; cache size survives a restart", async () => {
  let failing = false;
  await using fake = await startFakeRegistry({
    providers: TWO_PROVIDERS,
    intercept: (req) => {
      if (failing && new URL(req.url).pathname.endsWith("/versions")) {
        return new Response("down", { status: 503 });
      }
    },
  });
  await using dir = await tempDir();
  let now = 1_000_000;
  {
    await using t = await makeTestApp(fake, dir.path, {}, { now: () => now });
    const fb = fake.archive("beta", "2.3.4", "linux_arm64");
    await bytesOf(await t.get(`/${H}/example/beta/${fb.filename}`));
    await bytesOf(await t.get(`/${H}/example/alpha/index.json`));
    await t.app.settle();

    failing = true;
    now += 11 * 60_000; // the version list is past its TTL
    const stale = await t.get(`/${H}/example/alpha/index.json`);
    assertEquals(stale.status, 200);
    assertEquals(stale.headers.get("x-repoxy-cache"), "stale");
    await bytesOf(stale);
    const fresh = await t.get(`/${H}/example/nope/index.json`); // nothing stored: 502
    assertEquals(fresh.status, 502);
    await bytesOf(fresh);

    const m = await scrape(t);
    assertEquals(
      m.value("repoxy_cache_lookups_total", { route: "mirrorIndex", result: "stale" }),
      1,
    );
    assertEquals(m.value("repoxy_http_requests_total", { route: "mirrorIndex", status: "502" }), 1);
    // Three attempts per failing refresh (retries), two refreshes.
    assertEquals(m.value("repoxy_upstream_requests_total", { upstream: H, status: "503" }), 6);
    assertEquals(m.value("repoxy_upstream_errors_total", { upstream: H, reason: "bad_status" }), 6);
    const health = t.app.telemetry.upstreamHealth(H);
    assertEquals(health.failures, 6);
    assertEquals(health.lastFailure?.status, 503);
    assertMatch(health.lastFailure?.url ?? "", /\/v1\/providers\/example\/nope\/versions$/);
    assertEquals(health.lastSuccess?.status, 200);
    assertEquals(m.value("repoxy_cache_size_bytes"), fb.bytes.length);
  }
  // A new process walks packages/ once at start.
  failing = false;
  await using t2 = await makeTestApp(fake, dir.path);
  const m2 = await scrape(t2);
  assertEquals(m2.value("repoxy_cache_archives"), 1);
  assertEquals(
    m2.value("repoxy_cache_size_bytes"),
    fake.archive("beta", "2.3.4", "linux_arm64").bytes.length,
  );
});

Deno.test("/-/metrics counts connection failures as no_response", async () => {
  await using dir = await tempDir();
  // A port nothing listens on: take one, then free it.
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  await using t = await makeTestApp(undefined, dir.path, {
    upstreams: { [H]: { url: `http://127.0.0.1:${port}` } },
  });
  const res = await t.get(`/${H}/example/alpha/index.json`);
  assertEquals(res.status, 502);
  await bytesOf(res);
  const m = await scrape(t);
  assertEquals(m.value("repoxy_upstream_requests_total", { upstream: H, status: "error" }), 3);
  assertEquals(m.value("repoxy_upstream_errors_total", { upstream: H, reason: "no_response" }), 3);
  assert(!m.has("repoxy_upstream_request_duration_seconds_count", { upstream: H }));
  assertMatch(t.app.telemetry.upstreamHealth(H).lastFailure?.error ?? "", /refused|connect/i);
});

Deno.test("isUpstreamFailure: no answer, 5xx, 429 and refused credentials; not 404", () => {
  for (const s of ["error", 500, 502, 503, 429, 401, 403] as const) {
    assert(isUpstreamFailure(s), String(s));
  }
  for (const s of [200, 302, 304, 404, 410]) assert(!isUpstreamFailure(s), String(s));
});
