/**
 * docs/grafana/repoxy.json: every metric its PromQL queries exists, with
 * samples, in a real `/-/metrics` scrape of an app that has served a hit, a
 * miss and an error; the panels cover what operators need; the JSON is a
 * dashboard Grafana can import (unique ids, no overlapping panels, every
 * query on the `$datasource` variable).
 */
import { assert, assertEquals, assertThrows } from "../lib/deps/assert.ts";
import { fromFileUrl } from "../lib/deps/path.ts";
import { type Exposition, parseExposition } from "./_prom.ts";
import { bytesOf, mirrorFixture, TWO_PROVIDERS } from "./_helpers.ts";

const DASHBOARD = fromFileUrl(new URL("../docs/grafana/repoxy.json", import.meta.url));
const H = "registry.terraform.io";

/** PromQL words that are not metric names when not followed by `(`. */
const KEYWORDS = new Set([
  "by",
  "without",
  "on",
  "ignoring",
  "group_left",
  "group_right",
  "bool",
  "and",
  "or",
  "unless",
  "offset",
  "atan2",
  "inf",
  "nan",
]);
/** Aggregation operators: `sum by (x) (...)` puts a clause between the name and `(`. */
const AGGREGATIONS = new Set([
  "sum",
  "min",
  "max",
  "avg",
  "group",
  "stddev",
  "stdvar",
  "count",
  "count_values",
  "bottomk",
  "topk",
  "quantile",
  "limitk",
  "limit_ratio",
]);
/** Clauses followed by a parenthesised list of label names. */
const LABEL_LISTS = new Set(["by", "without", "on", "ignoring", "group_left", "group_right"]);

/**
 * The metric names a PromQL expression (or a Grafana `label_values(...)`
 * query) selects: strings, `{...}` matchers, `[...]` ranges, Grafana
 * variables, numbers, functions, aggregations, keywords and label lists
 * stripped. Throws on `__name__` matchers, which it cannot resolve.
 */
function metricNames(expr: string): string[] {
  if (/__name__/.test(expr)) throw new Error(`cannot resolve __name__ in: ${expr}`);
  const s = expr
    .replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`/g, '""')
    .replace(/\{[^}]*\}/g, " ")
    .replace(/\[[^\]]*\]/g, " ")
    .replace(/\$\{[^}]*\}|\$\w+/g, " ");
  const tokens = s.match(/[a-zA-Z_:][a-zA-Z0-9_:]*|\d[\w.]*|\S/g) ?? [];
  const names = new Set<string>();
  for (let i = 0; i < tokens.length; i++) {
    const t = tokens[i]!;
    if (!/^[a-zA-Z_:]/.test(t)) continue;
    if (LABEL_LISTS.has(t) && tokens[i + 1] === "(") {
      // Skip the label list itself.
      while (i < tokens.length && tokens[i] !== ")") i++;
      continue;
    }
    if (KEYWORDS.has(t) || AGGREGATIONS.has(t)) continue;
    if (tokens[i + 1] === "(") continue; // a function
    names.add(t);
  }
  return [...names];
}

interface Target {
  expr: string;
  refId: string;
  datasource?: { uid?: string };
}
interface Panel {
  id: number;
  type: string;
  title: string;
  gridPos: { x: number; y: number; w: number; h: number };
  datasource?: { type?: string; uid?: string };
  targets?: Target[];
  panels?: Panel[];
}

async function loadDashboard() {
  return JSON.parse(await Deno.readTextFile(DASHBOARD)) as {
    uid: string;
    title: string;
    panels: Panel[];
    templating: { list: { name: string; type: string; query?: string | { query: string } }[] };
  };
}

/** Every query of the dashboard: panel targets and template variable queries. */
async function allQueries(): Promise<string[]> {
  const d = await loadDashboard();
  const panels = d.panels.flatMap((p) => [p, ...(p.panels ?? [])]);
  const exprs = panels.flatMap((p) => (p.targets ?? []).map((t) => t.expr));
  for (const v of d.templating.list) {
    if (v.type !== "query") continue;
    exprs.push(typeof v.query === "string" ? v.query : v.query!.query);
  }
  return exprs;
}

/** The family of a sample name: itself, or a histogram's for `_bucket`/`_sum`/`_count`. */
function familyOf(m: Exposition, name: string): string | undefined {
  if (m.types.has(name)) return name;
  for (const suffix of ["_bucket", "_sum", "_count"]) {
    const base = name.slice(0, -suffix.length);
    if (name.endsWith(suffix) && ["histogram", "summary"].includes(m.types.get(base) ?? "")) {
      return base;
    }
  }
  return undefined;
}

Deno.test("metricNames strips functions, aggregations, matchers, ranges, label lists and variables", () => {
  assertEquals(
    metricNames(
      'histogram_quantile(0.95, sum by (le, route) (rate(a_seconds_bucket{job=~"$job",x="by(y)"}[$__rate_interval])))',
    ),
    ["a_seconds_bucket"],
  );
  assertEquals(
    metricNames(
      "sum without (instance) (rate(x_total[5m] offset 1h)) / on (job) group_left (version) build_info",
    ),
    ["x_total", "build_info"],
  );
  assertEquals(metricNames("time() - process_start_time_seconds{instance=~'$i'}"), [
    "process_start_time_seconds",
  ]);
  assertEquals(metricNames('label_values(repoxy_build_info{job=~"$job"}, instance)'), [
    "repoxy_build_info",
    "instance",
  ]);
  assertEquals(metricNames("a > bool 1e3 and b or c unless d"), ["a", "b", "c", "d"]);
  assertEquals(metricNames("sum(rate(a[1m])) by (route)"), ["a"]);
  assertThrows(() => metricNames('{__name__="x"}'), Error, "__name__");
});

Deno.test("the dashboard queries only metrics that a real scrape has, with samples", async () => {
  let failing = false;
  let refused = 0;
  await using t = await mirrorFixture({
    providers: TWO_PROVIDERS,
    config: { maxCacheSize: "1GB" },
    registry: {
      intercept: (req) => {
        if (failing && new URL(req.url).pathname.includes("/beta/")) {
          refused++;
          return new Response("down", { status: 503 });
        }
      },
    },
  });
  const fa = t.fake.archive("alpha", "1.1.0", "linux_amd64");
  // A miss, then a hit of the same archive.
  const miss = await t.get(`/${H}/example/alpha/${fa.filename}`);
  assertEquals(miss.status, 200);
  assertEquals((await bytesOf(miss)).length, fa.bytes.length);
  await t.app.settle();
  const hit = await t.get(`/${H}/example/alpha/${fa.filename}`);
  assertEquals(hit.headers.get("x-repoxy-cache"), "hit");
  assertEquals((await bytesOf(hit)).length, fa.bytes.length);
  // An error: the upstream answers 503 and the client gets a 5xx.
  failing = true;
  const err = await t.get(`/${H}/example/beta/index.json`);
  assert(err.status >= 500, `status ${err.status}`);
  await bytesOf(err);

  const res = await t.get("/-/metrics");
  assertEquals(res.status, 200);
  const m = parseExposition(await res.text());
  assertEquals(m.value("repoxy_cache_lookups_total", { route: "archive", result: "hit" }), 1);
  assertEquals(m.value("repoxy_cache_lookups_total", { route: "archive", result: "miss" }), 1);
  assert(refused > 0);
  assertEquals(
    m.value("repoxy_upstream_errors_total", { upstream: H, reason: "bad_status" }),
    refused,
  );
  assertEquals(m.value("repoxy_upstream_requests_total", { upstream: H, status: "503" }), refused);
  assertEquals(m.value("repoxy_cache_max_bytes"), 1e9);

  const queries = await allQueries();
  const names = new Set(queries.flatMap(metricNames));
  names.delete("instance"); // label_values(metric, label): the label is not a metric
  names.delete("job");
  const missing: string[] = [];
  for (const name of [...names].sort()) {
    const family = familyOf(m, name);
    if (!family || !m.samples.some((s) => s.name === name)) missing.push(name);
  }
  assertEquals(missing, [], "queried by the dashboard but not in the scrape");

  // What operators need is on it: each of these is queried.
  const needed = [
    "repoxy_http_requests_total",
    "repoxy_http_request_duration_seconds_bucket",
    "repoxy_http_response_bytes_total",
    "repoxy_cache_lookups_total",
    "repoxy_upstream_requests_total",
    "repoxy_upstream_errors_total",
    "repoxy_upstream_request_duration_seconds_bucket",
    "repoxy_downloads_in_flight",
    "repoxy_cache_size_bytes",
    "repoxy_cache_max_bytes",
    "process_resident_memory_bytes",
    "process_cpu_seconds_total",
    "process_open_fds",
    "process_max_fds",
    "process_start_time_seconds",
    "deno_heap_used_bytes",
  ];
  assertEquals(needed.filter((n) => !names.has(n)), []);
  // Counters are only ever read through rate() or increase().
  for (const q of queries) {
    for (const n of metricNames(q)) {
      if (m.types.get(n) !== "counter") continue;
      assert(
        new RegExp(`(rate|increase)\\(${n}(\\{[^}]*\\})?\\[`).test(q),
        `counter ${n} is not rated in: ${q}`,
      );
    }
  }
});

Deno.test("the dashboard imports: unique ids, no overlaps, every query on $datasource", async () => {
  const d = await loadDashboard();
  assertEquals(d.uid, "repoxy");
  const panels = d.panels.flatMap((p) => [p, ...(p.panels ?? [])]);
  const ids = panels.map((p) => p.id);
  assertEquals(new Set(ids).size, ids.length, "panel ids are unique");
  for (const [i, a] of panels.entries()) {
    assert(a.gridPos.x >= 0 && a.gridPos.x + a.gridPos.w <= 24, `${a.title} fits the 24 columns`);
    for (const b of panels.slice(i + 1)) {
      const overlap = a.gridPos.x < b.gridPos.x + b.gridPos.w &&
        b.gridPos.x < a.gridPos.x + a.gridPos.w &&
        a.gridPos.y < b.gridPos.y + b.gridPos.h && b.gridPos.y < a.gridPos.y + a.gridPos.h;
      assert(!overlap, `"${a.title}" overlaps "${b.title}"`);
    }
    if (a.type === "row") continue;
    assertEquals(a.datasource?.uid, "${datasource}", a.title);
    assert((a.targets ?? []).length > 0, `${a.title} has queries`);
    const refIds = a.targets!.map((t) => t.refId);
    assertEquals(new Set(refIds).size, refIds.length, `${a.title}: refIds unique`);
    for (const t of a.targets!) assertEquals(t.datasource?.uid, "${datasource}", a.title);
  }
  const vars = d.templating.list.map((v) => `${v.type}:${v.name}`);
  assertEquals(vars, ["datasource:datasource", "query:job", "query:instance"]);
});
