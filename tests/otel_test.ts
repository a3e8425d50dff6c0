/**
 * Tracing with Deno's built-in OpenTelemetry: the real server, spawned with
 * `OTEL_DENO=true`, exports its spans over OTLP/HTTP (JSON) to a small
 * receiver in this test. A cold `versions` and archive (misses, with their
 * upstream requests and the signature check) and warm ones (hits) must show
 * up as spans with the right names, attributes and parent links; a client's
 * `traceparent` is honoured, and reaches an upstream only when configured.
 * @module
 */
import { assert, assertEquals, assertNotEquals } from "../lib/deps/assert.ts";
import { ancestors, type ExportedSpan, withTracedServer } from "./_otel.ts";
import { startFakeRegistry } from "./fake_registry.ts";

const P = "/v1/providers/registry.terraform.io/example/alpha";
const M = "/registry.terraform.io/example/alpha";
const ZIP = "terraform-provider-alpha_1.0.0_linux_amd64.zip";
const TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN = "00f067aa0ba902b7";
const TRACEPARENT = `00-${TRACE_ID}-${CLIENT_SPAN}-01`;

async function get(url: string, headers: Record<string, string> = {}): Promise<Response> {
  return await fetch(url, { headers });
}

Deno.test("otel: request, cache lookup, upstream and signature spans reach an OTLP receiver", async () => {
  // Held until both concurrent requests for `versions` are in: the second joins the first.
  let release!: () => void;
  const held = new Promise<void>((r) => (release = r));
  let versionsAsked = 0;
  await using fake = await startFakeRegistry({
    providers: [{
      namespace: "example",
      type: "alpha",
      versions: [{ version: "1.0.0", platforms: ["linux_amd64"] }],
    }],
    intercept: async (req) => {
      if (new URL(req.url).pathname.endsWith("/alpha/versions")) {
        versionsAsked++;
        await held;
      }
      return undefined;
    },
  });
  const archive = fake.archive("alpha", "1.0.0", "linux_amd64");
  const rx = await withTracedServer(fake, {}, async (base) => {
    const first = get(`${base}${P}/versions`, { traceparent: TRACEPARENT });
    // The first request is at the upstream before the second is sent.
    for (let i = 0; i < 100 && versionsAsked === 0; i++) {
      await new Promise((r) => setTimeout(r, 20));
    }
    const second = get(`${base}${P}/versions`);
    await new Promise((r) => setTimeout(r, 200));
    release();
    for (const res of [await first, await second]) {
      assertEquals(res.status, 200);
      await res.body?.cancel();
    }
    const hit = await get(`${base}${P}/versions`);
    assertEquals(hit.status, 200);
    await hit.body?.cancel();
    const zip = await get(`${base}${M}/${ZIP}`);
    assertEquals(zip.status, 200);
    assertEquals(new Uint8Array(await zip.arrayBuffer()), archive.bytes);
    // Until the download is committed, a request joins it; then it is a hit.
    for (let i = 0; i < 100; i++) {
      const again = await get(`${base}${M}/${ZIP}`);
      assertEquals(again.status, 200);
      assertEquals((await again.arrayBuffer()).byteLength, archive.bytes.length);
      if (again.headers.get("x-repoxy-cache") === "hit") break;
      await new Promise((r) => setTimeout(r, 20));
    }
  });
  assertEquals(versionsAsked, 1, "one upstream request for both concurrent clients");
  assert(rx.paths.every((p) => p.startsWith("/v1/traces application/json")), rx.paths.join());
  const ours = rx.spans.filter((s) => s.scope === "repoxy");

  // Requests: named by route, with status, cache decision and bytes.
  const versions = ours.filter((s) => s.name === "repoxy registryVersions");
  assertEquals(versions.map((s) => s.attributes["repoxy.cache"]).sort(), ["hit", "miss", "miss"]);
  for (const s of versions) {
    assertEquals(s.attributes["http.response.status_code"], 200);
    assertEquals(s.attributes["url.path"], `${P}/versions`);
    assertEquals(s.attributes["repoxy.route"], "registryVersions");
  }
  // The client's traceparent: the request joins its trace, under Deno's server span.
  const traced = versions.filter((s) => s.traceId === TRACE_ID);
  assertEquals(traced.length, 1, "exactly the request that sent a traceparent is in its trace");
  const [req] = traced;
  // Its access log line names the trace (the log is where a slow request is found).
  const lines = rx.log.filter((l) => l.includes(`/alpha/versions`) && /\brequest\b/.test(l));
  assertEquals(lines.length, 3, rx.log.join("\n"));
  assertEquals(lines.filter((l) => l.includes(TRACE_ID)).length, 1, lines.join("\n"));
  for (const s of versions) assertEquals(lines.filter((l) => l.includes(s.traceId)).length, 1);
  const server = rx.spans.find((s) => s.spanId === req!.parentSpanId)!;
  assert(server, "the request span's parent (Deno.serve's span) was exported");
  assertEquals(server.kind, 2, "SERVER");
  assertEquals(server.parentSpanId, CLIENT_SPAN);

  // Cache lookups: one fetched, the concurrent one joined it.
  const lookups = ours.filter((s) => s.name === "cache lookup" && s.attributes["repoxy.key"]);
  const versionLookups = lookups.filter((s) =>
    String(s.attributes["repoxy.key"]).endsWith("/alpha/versions") &&
    s.attributes["repoxy.decision"] === "miss"
  );
  assertEquals(
    versionLookups.map((s) =>
      `${s.attributes["repoxy.decision"]} joined=${s.attributes["repoxy.joined"]}`
    )
      .sort(),
    ["miss joined=false", "miss joined=true"],
  );
  const leader = versionLookups.find((s) => s.attributes["repoxy.joined"] === false)!;
  assertEquals(leader.traceId, TRACE_ID, "the first request fetched");

  // The upstream request: a child of that lookup, with host, path, status and size.
  const ups = ours.filter((s) => s.name === "upstream GET");
  const versionsUp = ups.filter((s) =>
    s.attributes["url.path"] === "/v1/providers/example/alpha/versions"
  );
  assertEquals(versionsUp.length, 1);
  const [up] = versionsUp;
  assertEquals(up!.parentSpanId, leader.spanId);
  assertEquals(up!.kind, 3, "CLIENT");
  assertEquals(up!.attributes["server.address"], "127.0.0.1");
  assertEquals(up!.attributes["http.response.status_code"], 200);
  assertEquals(up!.attributes["repoxy.propagated"], false);
  assert(Number(up!.attributes["http.response.body.size"]) > 0);
  // No upstream request in the hit's trace.
  const hitSpan = versions.find((s) => s.attributes["repoxy.cache"] === "hit")!;
  assertEquals(ups.filter((s) => s.traceId === hitSpan.traceId), []);

  // Not propagated by default: the registry saw none of the client's trace.
  const seen = fake.requests.filter((r) => r.path.endsWith("/alpha/versions"));
  assertEquals(seen.length, 1);
  const tp = seen[0]!.headers.get("traceparent") ?? "";
  assert(!tp.includes(TRACE_ID), `the upstream got the client's trace id: ${tp}`);
  for (const r of fake.requests) {
    const t = r.headers.get("traceparent") ?? "";
    for (const s of versions) assert(!t.includes(s.traceId), `${r.path} got ${t}`);
  }

  // The archive: a miss with its download (each hop a span) and the
  // signature check in its trace, then a hit with neither.
  const archives = ours.filter((s) => s.name === "repoxy archive");
  const caches = archives.map((s) =>
    `${s.attributes["repoxy.cache"]} joined=${s.attributes["repoxy.joined"]}`
  );
  assertEquals(caches[0], "miss joined=false");
  assertEquals(caches.at(-1), "hit joined=undefined");
  // Between them, requests that came while the download was still being committed joined it.
  for (const c of caches.slice(1, -1)) assertEquals(c, "miss joined=true");
  for (const s of archives) {
    assertEquals(s.attributes["repoxy.bytes"], archive.bytes.length);
    assertEquals(s.attributes["http.response.status_code"], 200);
  }
  for (const s of archives.slice(1)) {
    assertEquals(ups.filter((u) => u.traceId === s.traceId), [], "no upstream request of its own");
  }
  const [miss] = archives;
  const warm = archives.at(-1);
  const inMiss = ours.filter((s) => s.traceId === miss!.traceId);
  const zipUp = inMiss.filter((s) =>
    s.name === "upstream GET" && String(s.attributes["url.path"]).endsWith(".zip")
  );
  assertEquals(zipUp.length, 2, "the download_url and its redirect, each a span");
  const download = inMiss.find((s) => s.name === "archive download");
  assert(download, "the archive's download is a span");
  assertEquals(download.attributes["repoxy.bytes"], archive.bytes.length);
  assertEquals(download.parentSpanId, miss!.spanId);
  for (const s of zipUp) {
    assert(ancestors(rx.spans, s).some((a) => a.spanId === download.spanId), "under the download");
  }
  // The signature check: under the archive's request, or under the read-ahead
  // the first versions request started (whichever fetched SHA256SUMS first).
  const sigs = ours.filter((s) => s.name === "signature check");
  assertEquals(sigs.length, 1, "one signature check");
  const above = ancestors(rx.spans, sigs[0]!).map((a) => a.name);
  assert(
    above.includes("repoxy archive") ||
      (above.includes("read-ahead") && above.includes("repoxy registryVersions")),
    `signature check under ${above}`,
  );
  assertEquals(zipUp.at(-1)!.attributes["http.response.body.size"], archive.bytes.length);
  assertEquals(
    ours.filter((s) => s.traceId === warm!.traceId).map((s) => s.name),
    ["repoxy archive"],
  );
});

Deno.test("otel: REPOXY_OTEL_PROPAGATE_TO lets a listed upstream see the client's trace", async () => {
  await using fake = await startFakeRegistry({
    providers: [{
      namespace: "example",
      type: "alpha",
      versions: [{ version: "1.0.0", platforms: ["linux_amd64"] }],
    }],
  });
  const rx = await withTracedServer(
    fake,
    { REPOXY_OTEL_PROPAGATE_TO: " Example.test , 127.0.0.1" },
    async (base) => {
      const res = await get(`${base}${P}/versions`, { traceparent: TRACEPARENT });
      assertEquals(res.status, 200);
      await res.body?.cancel();
    },
  );
  const seen = fake.requests.filter((r) => r.path.endsWith("/alpha/versions"));
  assertEquals(seen.length, 1);
  const tp = seen[0]!.headers.get("traceparent") ?? "";
  assert(tp.startsWith(`00-${TRACE_ID}-`), `the upstream continues the client's trace: ${tp}`);
  const up = rx.spans.find((s) =>
    s.scope === "repoxy" && s.name === "upstream GET" &&
    s.attributes["url.path"] === "/v1/providers/example/alpha/versions"
  )!;
  assertEquals(up.attributes["repoxy.propagated"], true);
  // The upstream saw Deno's fetch span, a child of ours.
  const fetchSpan = rx.spans.find((s) => tp.includes(s.spanId))!;
  assert(fetchSpan, "the span named in the upstream's traceparent was exported");
  assertEquals(fetchSpan.parentSpanId, up.spanId);
  assertNotEquals(fetchSpan.scope, "repoxy");
});

Deno.test("otel: with the sampler off nothing is exported and the log names no trace", async () => {
  await using fake = await startFakeRegistry({
    providers: [{
      namespace: "example",
      type: "alpha",
      versions: [{ version: "1.0.0", platforms: ["linux_amd64"] }],
    }],
  });
  const rx = await withTracedServer(fake, { OTEL_TRACES_SAMPLER: "always_off" }, async (base) => {
    const res = await get(`${base}${P}/versions`);
    assertEquals(res.status, 200);
    await res.body?.cancel();
  }, false);
  // A clean exit flushed the exporter: anything sampled would be here.
  assertEquals(rx.spans, []);
  const lines = rx.log.filter((l) => l.includes(`/alpha/versions`));
  assertEquals(lines.length, 1, rx.log.join("\n"));
  assert(!/\btrace\b/.test(lines[0]!), lines[0]);
});

Deno.test("otel: revalidated and stale answers say so, and a failing upstream's requests are errors", async () => {
  let failing = false;
  await using fake = await startFakeRegistry({
    providers: [{
      namespace: "example",
      type: "alpha",
      versions: [{ version: "1.0.0", platforms: ["linux_amd64"] }],
    }],
    versionValidators: "etag",
    intercept: (req) =>
      failing && new URL(req.url).pathname.endsWith("/alpha/versions")
        ? new Response("down", { status: 503, headers: { "retry-after": "0" } })
        : undefined,
  });
  const rx = await withTracedServer(
    fake,
    {},
    async (base) => {
      for (const fail of [false, false, true]) {
        failing = fail;
        const res = await get(`${base}${P}/versions`);
        assertEquals(res.status, 200);
        await res.body?.cancel();
        // The miss started a read-ahead that revalidates the list too: let it end.
        await new Promise((r) => setTimeout(r, 300));
      }
    },
    true,
    { metadataTtl: "1ms" },
  );
  const ours = rx.spans.filter((s) => s.scope === "repoxy");
  const requests = ours.filter((s) => s.name === "repoxy registryVersions");
  assertEquals(requests.map((s) => s.attributes["repoxy.cache"]), ["miss", "revalidated", "stale"]);
  const upstream = (s: ExportedSpan) =>
    ours.filter((u) =>
      u.traceId === s.traceId && u.name === "upstream GET" &&
      u.attributes["url.path"] === "/v1/providers/example/alpha/versions" &&
      // The request's own, not those of the read-ahead it started.
      !ancestors(rx.spans, u).some((a) => a.name === "read-ahead")
    ).map((u) => `${u.attributes["http.response.status_code"]}:${u.status?.code ?? 0}`);
  const [miss, revalidated, stale] = requests;
  assertEquals(upstream(miss!), ["200:0"]);
  const joined = ours.find((l) =>
    l.parentSpanId === revalidated!.spanId && l.name === "cache lookup"
  )?.attributes["repoxy.joined"];
  // (Had the read-ahead's revalidation still been under way, it would have joined that one.)
  assertEquals(upstream(revalidated!), joined ? [] : ["304:0"]);
  // Three tries, each an error (status code 2).
  assertEquals(upstream(stale!), ["503:2", "503:2", "503:2"]);
  const lookups = ours.filter((s) =>
    s.name === "cache lookup" && String(s.attributes["repoxy.key"]).endsWith("/alpha/versions")
  );
  for (const [r, decision] of [[revalidated!, "revalidated"], [stale!, "stale"]] as const) {
    const l = lookups.find((x) => x.parentSpanId === r.spanId);
    assertEquals(l?.attributes["repoxy.decision"], decision);
  }
});
