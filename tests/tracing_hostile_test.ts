/**
 * Red team of tracing: what a client's request puts into exported spans.
 * The real server with `OTEL_DENO=true`, exporting OTLP/JSON to a receiver
 * in this test (as otel_test does).
 */
import { assert, assertEquals } from "../lib/deps/assert.ts";
import { ROOT, writeFakeConfig } from "./_cli.ts";
import { tempDir } from "./_helpers.ts";
import { spawnRepoxy } from "./_process.ts";
import { startFakeRegistry } from "./fake_registry.ts";

const MAIN = new URL("../main.ts", import.meta.url).pathname;
const P = "/v1/providers/registry.terraform.io/example/alpha";

Deno.test("otel: a request's query (a signed link's signature) is in none of Repoxy's spans; malformed traceparents start new traces", async () => {
  const bodies: string[] = [];
  const receiver = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
    bodies.push(await req.text());
    return Response.json({});
  });
  await using fake = await startFakeRegistry({
    providers: [{
      namespace: "example",
      type: "alpha",
      versions: [{ version: "1.0.0", platforms: ["linux_amd64"] }],
    }],
  });
  await using dir = await tempDir("repoxy-otel-");
  const written = await writeFakeConfig(dir.path, fake);
  const bad = [
    "garbage",
    `00-${"f".repeat(5000)}`,
    `00-${"0".repeat(32)}-00f067aa0ba902b7-01`,
    `ff-${"ab".repeat(16)}-00f067aa0ba902b7-01`,
  ];
  try {
    const server = await spawnRepoxy(Deno.execPath(), [
      "run",
      "-P=serve",
      MAIN,
      "serve",
      "--config",
      written.config,
      "--listen",
      "127.0.0.1:0",
    ], {
      cwd: ROOT,
      env: {
        OTEL_DENO: "true",
        OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${receiver.addr.port}`,
        OTEL_EXPORTER_OTLP_PROTOCOL: "http/json",
        OTEL_DENO_CONSOLE: "ignore",
        OTEL_DENO_METRICS: "false",
      },
    });
    try {
      const base = server.url.replace(/\/$/, "");
      for (const tp of ["", ...bad]) {
        const r = await fetch(`${base}${P}/versions?sig=SIGSECRET-${tp.length}&exp=1`, {
          headers: tp ? { traceparent: tp } : {},
        });
        assertEquals(r.status, 200);
        await r.body?.cancel();
      }
    } finally {
      assertEquals((await server.stop("SIGTERM")).code, 0);
    }
    for (let i = 0; i < 50 && !bodies.some((b) => b.includes("registryVersions")); i++) {
      await new Promise((r) => setTimeout(r, 100));
    }
  } finally {
    await receiver.shutdown();
  }
  const all = bodies.join("\n");
  assert(all.includes("registryVersions"), "spans were exported");
  const leaks: string[] = [];
  for (const b of bodies) {
    for (const rs of JSON.parse(b).resourceSpans ?? []) {
      for (const ss of rs.scopeSpans ?? []) {
        for (const sp of ss.spans ?? []) {
          for (const a of sp.attributes ?? []) {
            const v = JSON.stringify(a.value);
            // Deno's own server span ("deno" scope) records url.full with the
            // query, and appends rather than replaces when set again: not
            // Repoxy's to redact (README: Tracing). Repoxy's spans never do.
            if (v.includes("SIGSECRET") && ss.scope?.name === "repoxy") {
              leaks.push(`${ss.scope?.name} ${sp.name} ${a.key}=${v}`);
            }
          }
        }
      }
    }
  }
  assertEquals(leaks, [], `a query reached the exporter:\n${leaks.join("\n")}`);
  // Malformed, all-zero and unknown-version trace ids start new traces.
  for (const id of ["f".repeat(32), "0".repeat(32)]) {
    assertEquals(all.includes(`"traceId":"${id}"`), false, id);
  }
});
