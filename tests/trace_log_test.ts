/**
 * `REPOXY_TRACE=1` (issue 12's profiling aid): the real server logs one
 * "trace" line per timed step of an uncached request (upstream document,
 * signature check, fsync), JSON when asked; without the variable, none.
 * @module
 */
import { assert, assertEquals } from "../lib/deps/assert.ts";
import { ROOT, writeFakeConfig } from "./_cli.ts";
import { tempDir } from "./_helpers.ts";
import { spawnRepoxy } from "./_process.ts";
import { startFakeRegistry } from "./fake_registry.ts";

const MAIN = new URL("../main.ts", import.meta.url).pathname;
const P = "/v1/providers/registry.terraform.io/example/alpha";

/** The log lines of a server that answered a cold versions and {version}.json. */
async function coldLog(env: Record<string, string>): Promise<string[]> {
  await using fake = await startFakeRegistry({
    providers: [{
      namespace: "example",
      type: "alpha",
      versions: [{ version: "1.0.0", platforms: ["linux_amd64"] }],
    }],
  });
  await using dir = await tempDir("repoxy-trace-");
  const written = await writeFakeConfig(dir.path, fake, { logFormat: "json" });
  const server = await spawnRepoxy(Deno.execPath(), [
    "run",
    "-P=serve",
    MAIN,
    "serve",
    "--config",
    written.config,
    "--listen",
    "127.0.0.1:0",
  ], { cwd: ROOT, env });
  try {
    const base = server.url.replace(/\/$/, "");
    for (const path of [`${P}/versions`, `/registry.terraform.io/example/alpha/1.0.0.json`]) {
      const r = await fetch(`${base}${path}`);
      assertEquals(r.status, 200, path);
      await r.body?.cancel();
    }
  } finally {
    assertEquals((await server.stop("SIGTERM")).code, 0);
  }
  return [...server.stdout, ...server.stderr];
}

Deno.test("REPOXY_TRACE=1 logs the timed steps of a miss as trace lines; unset, none", async () => {
  const traces = (lines: string[]) =>
    lines.filter((l) => l.startsWith("{")).map((l) => JSON.parse(l)).filter((r) =>
      r.msg === "trace"
    );
  const on = traces(await coldLog({ REPOXY_TRACE: "1" }));
  const steps = new Set(on.map((r) => r.what));
  for (const what of ["upstream document", "signature check", "fsync", "rename"]) {
    assert(steps.has(what), `a "${what}" trace line: ${[...steps].join(", ")}`);
  }
  assert(on.every((r) => typeof r.ms === "number" && r.ms >= 0), JSON.stringify(on[0]));
  assertEquals(traces(await coldLog({})), []);
});
