/**
 * Tracing test kit, shared by otel_test and tracing_hostile_test: a small
 * OTLP/HTTP (JSON) receiver on 127.0.0.1:0 and the real server spawned with
 * `OTEL_DENO=true` exporting to it.
 * @module
 */
import { assertEquals } from "../lib/deps/assert.ts";
import { ROOT, writeFakeConfig } from "./_cli.ts";
import { tempDir } from "./_helpers.ts";
import { spawnRepoxy } from "./_process.ts";
import type { FakeRegistry } from "./fake_registry.ts";

const MAIN = new URL("../main.ts", import.meta.url).pathname;

/** A span as exported (OTLP JSON), attributes flattened. */
export interface ExportedSpan {
  name: string;
  scope: string;
  traceId: string;
  spanId: string;
  parentSpanId: string;
  kind: number;
  attributes: Record<string, string | number | boolean>;
  status?: { code?: number };
}

/** An OTLP/HTTP receiver on 127.0.0.1:0 that keeps the spans it is sent (JSON encoding). */
export function startReceiver() {
  const spans: ExportedSpan[] = [];
  const paths: string[] = [];
  const bodies: string[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
    const path = new URL(req.url).pathname;
    paths.push(`${path} ${req.headers.get("content-type")}`);
    const text = await req.text();
    bodies.push(text);
    const body = JSON.parse(text);
    for (const rs of body.resourceSpans ?? []) {
      for (const ss of rs.scopeSpans ?? []) {
        for (const s of ss.spans ?? []) {
          const attributes: ExportedSpan["attributes"] = {};
          for (const a of s.attributes ?? []) {
            const v = a.value;
            attributes[a.key] = v.stringValue ?? v.boolValue ??
              (v.intValue !== undefined ? Number(v.intValue) : v.doubleValue);
          }
          spans.push({
            name: s.name,
            scope: ss.scope?.name ?? "",
            traceId: s.traceId,
            spanId: s.spanId,
            parentSpanId: s.parentSpanId ?? "",
            kind: s.kind,
            attributes,
            status: s.status,
          });
        }
      }
    }
    return Response.json({});
  });
  return {
    endpoint: `http://127.0.0.1:${server.addr.port}`,
    spans,
    paths,
    bodies,
    stop: () => server.shutdown(),
  };
}

/** The chain of parents of `s` (nearest first), as far as exported spans reach. */
export function ancestors(spans: ExportedSpan[], s: ExportedSpan): ExportedSpan[] {
  const byId = new Map(spans.map((x) => [x.spanId, x]));
  const out: ExportedSpan[] = [];
  for (let p = byId.get(s.parentSpanId); p; p = byId.get(p.parentSpanId)) out.push(p);
  return out;
}

/**
 * Runs `work` against the real server (`repoxy serve` on 127.0.0.1:0, egress
 * allowed to `fake`) exporting spans to a fresh receiver; stops the server
 * with SIGTERM (a clean exit flushes the exporter), waits for Repoxy's spans
 * when `expectSpans`, and returns what the receiver got plus the server's log.
 */
export async function withTracedServer(
  fake: FakeRegistry,
  env: Record<string, string>,
  work: (url: string) => Promise<void>,
  expectSpans = true,
  config: Record<string, unknown> = {},
): Promise<ReturnType<typeof startReceiver> & { log: string[] }> {
  const receiver = startReceiver();
  const log: string[] = [];
  await using dir = await tempDir("repoxy-otel-");
  const written = await writeFakeConfig(dir.path, fake, config);
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
        OTEL_EXPORTER_OTLP_ENDPOINT: receiver.endpoint,
        OTEL_EXPORTER_OTLP_PROTOCOL: "http/json",
        OTEL_SERVICE_NAME: "repoxy",
        OTEL_DENO_CONSOLE: "ignore",
        OTEL_DENO_METRICS: "false",
        ...env,
      },
    });
    try {
      await work(server.url.replace(/\/$/, ""));
    } finally {
      // A clean exit flushes the exporter.
      const status = await server.stop("SIGTERM");
      log.push(...server.stdout, ...server.stderr);
      assertEquals(status.code, 0, server.stderr.join("\n"));
    }
    // The last batch may still be on its way.
    for (
      let i = 0;
      expectSpans && i < 50 && !receiver.spans.some((s) => s.scope === "repoxy");
      i++
    ) {
      await new Promise((r) => setTimeout(r, 100));
    }
  } finally {
    await receiver.stop();
  }
  return { ...receiver, log };
}
