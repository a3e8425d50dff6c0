/**
 * Red team of tracing: what a client's request puts into exported spans.
 * The real server with `OTEL_DENO=true`, exporting OTLP/JSON to a receiver
 * in this test (the kit in _otel.ts, shared with otel_test).
 */
import { assert, assertEquals } from "../lib/deps/assert.ts";
import { withTracedServer } from "./_otel.ts";
import { startFakeRegistry } from "./fake_registry.ts";

const P = "/v1/providers/registry.terraform.io/example/alpha";

Deno.test("otel: a request's query (a signed link's signature) is in none of Repoxy's spans; malformed traceparents start new traces", async () => {
  await using fake = await startFakeRegistry({
    providers: [{
      namespace: "example",
      type: "alpha",
      versions: [{ version: "1.0.0", platforms: ["linux_amd64"] }],
    }],
  });
  const bad = [
    "garbage",
    `00-${"f".repeat(5000)}`,
    `00-${"0".repeat(32)}-00f067aa0ba902b7-01`,
    `ff-${"ab".repeat(16)}-00f067aa0ba902b7-01`,
  ];
  const rx = await withTracedServer(fake, {}, async (base) => {
    for (const tp of ["", ...bad]) {
      const r = await fetch(`${base}${P}/versions?sig=SIGSECRET-${tp.length}&exp=1`, {
        headers: tp ? { traceparent: tp } : {},
      });
      assertEquals(r.status, 200);
      await r.body?.cancel();
    }
  });
  const all = rx.bodies.join("\n");
  assert(all.includes("registryVersions"), "spans were exported");
  assert(rx.spans.some((sp) => sp.scope === "repoxy"), "Repoxy's own spans were exported");
  // Deno's own server span ("deno" scope) records url.full with the query,
  // and appends rather than replaces when set again: not Repoxy's to redact
  // (README: Tracing). Repoxy's spans never do.
  // The whole span: name, attributes, events (a recorded exception), status.
  const leaks = rx.bodies.flatMap((b) =>
    // deno-lint-ignore no-explicit-any
    (JSON.parse(b).resourceSpans ?? []).flatMap((rs: any) => rs.scopeSpans ?? [])
      // deno-lint-ignore no-explicit-any
      .filter((ss: any) => ss.scope?.name === "repoxy")
      // deno-lint-ignore no-explicit-any
      .flatMap((ss: any) => ss.spans ?? []).map((sp: unknown) => JSON.stringify(sp))
      .filter((text: string) => text.includes("SIGSECRET"))
  );
  assertEquals(leaks, [], `a query reached the exporter:\n${leaks.join("\n")}`);
  // Malformed, all-zero and unknown-version trace ids start new traces.
  for (const id of ["f".repeat(32), "0".repeat(32)]) {
    assertEquals(all.includes(`"traceId":"${id}"`), false, id);
  }
});
