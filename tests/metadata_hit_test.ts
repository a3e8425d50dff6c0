/**
 * The hot path of a warm mirror, a kept metadata answer, after it was made
 * cheaper (issue 12 point 5): every header, status, ETag/304, HEAD, access
 * log line and metric stays exact, and the benchmark that measures it against
 * nginx (bench/metadata.ts) runs end to end. No timing is asserted here; the
 * figures are in bench/RESULTS.md.
 */
import { assert, assertEquals, assertThrows } from "../lib/deps/assert.ts";
import { dirname, fromFileUrl, join } from "../lib/deps/path.ts";
import { createLogger } from "../lib/base/log.ts";
import { Counter, Histogram, Registry } from "../lib/ops/metrics.ts";
import { mirrorFixture, tempDir, TWO_PROVIDERS } from "./_helpers.ts";
import { which } from "../bench/tools.ts";

const REPO = join(dirname(fromFileUrl(import.meta.url)), "..");

// Decided at module load (.ci/run installs them): without nginx, wrk or curl the
// bench test is ignored with one SKIP line, never counted as a pass.
const BENCH_MISSING: string[] = [];
for (const p of ["nginx", "wrk", "curl"]) if (!await which(p)) BENCH_MISSING.push(p);
if (BENCH_MISSING.length > 0) {
  // deno-lint-ignore no-console
  console.log(`SKIP: metadata bench smoke: ${BENCH_MISSING.join(", ")} not installed`);
}
const INDEX = "/registry.terraform.io/example/alpha/index.json";
const VERSION = "/registry.terraform.io/example/alpha/1.1.0.json";

Deno.test("a kept answer: headers, 304, HEAD, access log bytes and metrics stay exact", async () => {
  await using f = await mirrorFixture({ providers: TWO_PROVIDERS });
  for (const path of [INDEX, VERSION]) {
    const first = await f.get(path);
    assertEquals(first.status, 200);
    const text = await first.text();
    const bytes = new TextEncoder().encode(text).length;
    const etag = first.headers.get("etag")!;
    const upstreamBefore = f.upstream.length;
    const logBefore = f.log.records.length;
    const route = path === INDEX ? "mirrorIndex" : "mirrorVersion";
    const count = f.app.telemetry.requests.get({ route, status: 200 });
    const count304 = f.app.telemetry.requests.get({ route, status: 304 });
    const served = f.app.telemetry.bytesServed.get({ route });
    const hits = f.app.telemetry.cacheLookups.get({ route, result: "hit" });

    const get = await f.get(path);
    assertEquals(get.status, 200);
    assertEquals(await get.text(), text);
    assertEquals(get.headers.get("x-repoxy-cache"), "hit");
    assertEquals(get.headers.get("etag"), etag);
    assertEquals(get.headers.get("content-type"), "application/json");
    assertEquals(get.headers.get("content-length"), String(bytes));
    assert(/^public, max-age=\d+$/.test(get.headers.get("cache-control")!));

    const head = await f.get(path, { method: "HEAD" });
    assertEquals(head.status, 200);
    assertEquals(await head.text(), "");
    assertEquals(head.headers.get("content-length"), String(bytes));
    assertEquals(head.headers.get("etag"), etag);

    const not = await f.get(path, { headers: { "if-none-match": `"other", W/${etag}` } });
    assertEquals(not.status, 304);
    assertEquals(await not.text(), "");
    assertEquals(not.headers.get("etag"), etag);
    assertEquals(not.headers.get("x-repoxy-cache"), "hit");
    assertEquals(not.headers.get("content-length"), null);

    // Kept answers: no upstream call, one access log line each with the body
    // bytes sent, no client or note field, and every metric counted once.
    assertEquals(f.upstream.length, upstreamBefore);
    const lines = f.log.records.slice(logBefore).filter((r) => r.msg === "request");
    assertEquals(
      lines.map((r) => [r.method, r.path, r.status, r.bytes, r.cache]),
      [
        ["GET", path, 200, bytes, "hit"],
        ["HEAD", path, 200, 0, "hit"],
        ["GET", path, 304, 0, "hit"],
      ],
    );
    for (const r of lines) {
      assertEquals(Object.keys(r).filter((k) => k === "client" || k === "note"), []);
      assertEquals(typeof r.ms, "number");
    }
    assertEquals(f.app.telemetry.requests.get({ route, status: 200 }), count + 2);
    assertEquals(f.app.telemetry.requests.get({ route, status: "304" }), count304 + 1);
    assertEquals(f.app.telemetry.bytesServed.get({ route }), served + bytes);
    assertEquals(f.app.telemetry.cacheLookups.get({ route, result: "hit" }), hits + 3);
  }
});

Deno.test("a kept answer to a token: private, Vary, its client in the log line, bytes exact", async () => {
  const token = "hit-token-0123456789abcdef";
  await using f = await mirrorFixture({
    providers: TWO_PROVIDERS,
    config: { auth: { tokens: [{ name: "ci", token }] } },
  });
  const auth = { authorization: `Bearer ${token}` };
  const first = await f.get(INDEX, { headers: auth });
  assertEquals(first.status, 200);
  const text = await first.text();
  const bytes = new TextEncoder().encode(text).length;
  const mark = f.log.records.length;
  const upstream = f.upstream.length;
  const kept = await f.get(INDEX, { headers: auth });
  assertEquals(await kept.text(), text);
  assertEquals(kept.headers.get("x-repoxy-cache"), "hit");
  assert(/^private, max-age=\d+$/.test(kept.headers.get("cache-control")!));
  assertEquals(kept.headers.get("vary"), "Authorization");
  const head = await f.get(INDEX, { method: "HEAD", headers: auth });
  assertEquals(head.status, 200);
  await head.body?.cancel();
  // Without the token: refused, never the kept answer.
  const anon = await f.get(INDEX);
  assertEquals(anon.status, 401);
  const anonBytes = new TextEncoder().encode(await anon.text()).length;
  assertEquals(f.upstream.length, upstream);
  assertEquals(
    f.log.records.slice(mark).filter((r) => r.msg === "request").map((r) => [
      r.method,
      r.status,
      r.bytes,
      r.cache,
      r.client,
    ]),
    [
      ["GET", 200, bytes, "hit", "ci"],
      ["HEAD", 200, 0, "hit", "ci"],
      ["GET", 401, anonBytes, "-", undefined],
    ],
  );
});

Deno.test("metrics: a series found by label values is the one rendered, whatever the value's type", () => {
  const r = new Registry();
  const c = r.register(new Counter("c_total", "C", ["route", "status"]));
  c.inc({ route: "a", status: 200 });
  c.inc({ route: "a", status: "200" }, 2);
  c.inc({ status: 404, route: "a" });
  assertEquals(c.get({ route: "a", status: 200 }), 3);
  assertEquals(c.get({ route: "a", status: "404" }), 1);
  assertThrows(() => c.inc({ route: "a" }), TypeError, 'Missing label "status"');
  assertThrows(() => c.inc({ status: 1 }), TypeError, 'Missing label "route"');
  const plain = r.register(new Counter("p_total", "P"));
  plain.inc();
  plain.inc({}, 4);
  const h = r.register(new Histogram("h_seconds", "H", [0.5, 1], ["route"]));
  h.observe({ route: "x" }, 1);
  h.observe({ route: "x" }, 3);
  h.observe({ route: "x" }, Number.NaN);
  assertEquals(h.count({ route: "x" }), 3);
  const text = r.render();
  for (
    const line of [
      'c_total{route="a",status="200"} 3',
      'c_total{route="a",status="404"} 1',
      "p_total 5",
      'h_seconds_bucket{route="x",le="0.5"} 0',
      'h_seconds_bucket{route="x",le="1"} 1',
      'h_seconds_bucket{route="x",le="+Inf"} 3',
    ]
  ) assert(text.split("\n").includes(line), `missing ${line} in\n${text}`);
  assertEquals(text.split("\n").filter((l) => l.startsWith("c_total{")).length, 2);
});

Deno.test("log: text lines carry the current time and plain or quoted values as before", () => {
  const lines: string[] = [];
  const log = createLogger("text", (l) => lines.push(l));
  const before = Date.now();
  log.info("request", { n: 12.5, ok: false, path: "/a b", empty: "", gone: undefined, nil: null });
  log.info("request", { n: -3, big: 1e21, x: "a/b:c@d+e" });
  const after = Date.now();
  for (const l of lines) {
    const ts = Date.parse(l.slice(0, l.indexOf(" ")));
    assert(ts >= before && ts <= after, `${l} not stamped between ${before} and ${after}`);
  }
  assertEquals(lines.map((l) => l.slice(l.indexOf(" ") + 1)), [
    'INFO request n=12.5 ok=false path="/a b" empty=""',
    "INFO request n=-3 big=1e+21 x=a/b:c@d+e",
  ]);
  // An injected clock is still used as given.
  const fixed: string[] = [];
  createLogger("json", (l) => fixed.push(l), "info", () => new Date(0)).info("x");
  assertEquals(JSON.parse(fixed[0]!).ts, "1970-01-01T00:00:00.000Z");
});

Deno.test({
  name: "bench/metadata.ts --smoke measures both documents against nginx, same bytes",
  ignore: BENCH_MISSING.length > 0,
}, async () => {
  await using dir = await tempDir();
  const json = join(dir.path, "meta.json");
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-P=bench", "bench/metadata.ts", "--smoke", "--json", json],
    cwd: REPO,
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(120_000),
  }).output();
  const stdout = new TextDecoder().decode(out.stdout);
  const stderr = new TextDecoder().decode(out.stderr);
  assert(out.success, `bench failed (${out.code}):\n${stdout}\n${stderr}`);
  // The tools were found at load, so a bench that skips is a failure, not a pass.
  assert(!stdout.startsWith("SKIP"), stdout);
  const result = JSON.parse(await Deno.readTextFile(json)) as {
    cells: Record<string, Record<string, number[]>>;
  };
  assertEquals(Object.keys(result.cells).sort(), ["http index.json", "http {version}.json"]);
  for (const [key, c] of Object.entries(result.cells)) {
    for (const k of ["ratio", "r", "n", "rp99", "np99", "rCpu", "nCpu"]) {
      assertEquals(c[k]!.length, 1, `${key} ${k}`);
      assert(Number.isFinite(c[k]![0]) && c[k]![0]! > 0, `${key} ${k}: ${c[k]}`);
    }
  }
  assert(stdout.includes("| index.json, http |"), stdout);
  assert(stdout.includes("| {version}.json, http |"), stdout);
});
