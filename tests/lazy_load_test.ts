/**
 * What a serving process keeps in memory (issue 12, memory): OpenPGP, the
 * status page and the subcommands are loaded only when first needed. A real
 * `repoxy serve` runs with the V8 inspector on, and the scripts V8 has parsed
 * are read from it: the module graph the process actually loaded, not a
 * counter the code keeps about itself.
 * @module
 */
import { assert, assertEquals } from "../lib/deps/assert.ts";
import { COMMANDS } from "../lib/commands/mod.ts";
import { ROOT, writeFakeConfig } from "./_cli.ts";
import { makeTestApp, tempDir } from "./_helpers.ts";
import { spawnRepoxy } from "./_process.ts";
import { startFakeRegistry } from "./fake_registry.ts";

const MAIN = new URL("../main.ts", import.meta.url).pathname;
const P = "/v1/providers/registry.terraform.io/example/alpha";
const M = "/registry.terraform.io/example/alpha";

/** Modules a server answering from its cache must not have loaded. */
const ONLY_WHEN_NEEDED: Array<[string, RegExp]> = [
  ["OpenPGP", /\/openpgp\//],
  // Without OTEL_DENO=true (this server), tracing loads nothing.
  ["the OpenTelemetry API", /\/@opentelemetry\/api\//],
  ["the X.509 library", /\/(@peculiar|reflect-metadata|tsyringe|asn1js)\//],
  ["the status page", /\/lib\/ops\/status_page\.ts$/],
  [
    "a subcommand",
    /\/lib\/commands\/(warm|lock|lock_inputs|export|import|verify|prune|tls|x509)\.ts$/,
  ],
  ["node:zlib", /^(node:zlib|ext:deno_node\/zlib\.ts)$/],
];

/**
 * The V8 inspector of a process: the URLs of every script it has parsed, the
 * ones parsed before we connected included (V8 reports them on enable).
 */
async function inspectScripts(wsUrl: string): Promise<{
  scripts: Set<string>;
  /** Resolves once the inspector has reported every script parsed so far. */
  settled(): Promise<void>;
  close(): Promise<void>;
}> {
  const ws = new WebSocket(wsUrl);
  const scripts = new Set<string>();
  const replies = new Map<number, (v: unknown) => void>();
  let id = 0;
  await new Promise<void>((resolve, reject) => {
    ws.onopen = () => resolve();
    ws.onerror = () => reject(new Error(`cannot connect to the inspector at ${wsUrl}`));
  });
  ws.onmessage = (e) => {
    const m = JSON.parse(e.data);
    if (m.method === "Debugger.scriptParsed") scripts.add(m.params.url);
    if (typeof m.id === "number") replies.get(m.id)?.(m);
  };
  const call = (method: string) =>
    new Promise((resolve) => {
      replies.set(++id, resolve);
      ws.send(JSON.stringify({ id, method }));
    });
  // The reply to enable comes after the scriptParsed events of what exists.
  await call("Debugger.enable");
  return {
    scripts,
    // A round trip: events sent before its reply have arrived.
    settled: async () => {
      await call("Runtime.evaluate");
    },
    close: () =>
      new Promise<void>((resolve) => {
        ws.onclose = () => resolve();
        ws.close();
      }),
  };
}

function loaded(scripts: Set<string>): string[] {
  const found: string[] = [];
  for (const s of scripts) {
    for (const [what, re] of ONLY_WHEN_NEEDED) if (re.test(s)) found.push(`${what}: ${s}`);
  }
  return found;
}

Deno.test("a server answering metadata from its cache loads no OpenPGP, status page or subcommand", async () => {
  await using dir = await tempDir();
  const fake = await startFakeRegistry({
    providers: [{
      namespace: "example",
      type: "alpha",
      versions: [
        { version: "0.9.0", platforms: ["linux_amd64"] },
        { version: "1.0.0", platforms: ["linux_amd64"] },
        { version: "1.1.0", platforms: ["linux_amd64"] },
      ],
    }],
  });
  try {
    const { cacheDir, config } = await writeFakeConfig(dir.path, fake);
    // The cache is filled by another app first (this test process), so the
    // server under test has only hits to answer.
    {
      await using t = await makeTestApp(fake, cacheDir);
      for (const p of [`${P}/versions`, `${P}/1.0.0/download/linux/amd64`, `${M}/1.0.0.json`]) {
        const res = await t.get(p);
        await res.body?.cancel();
        assertEquals(res.status, 200, p);
      }
    }
    const sigs = () => fake.count((r) => r.path.endsWith("/SHA256SUMS.sig"));
    const sigsBefore = sigs();
    assert(sigsBefore > 0, "filling the cache verified a signature");

    await using server = await spawnRepoxy(Deno.execPath(), [
      "run",
      "--inspect=127.0.0.1:0",
      "-P=serve",
      MAIN,
      "serve",
      "--config",
      config,
      "--listen",
      "127.0.0.1:0",
    ], { cwd: ROOT });
    const ws = server.stderr.map((l) => /Debugger listening on (ws:\/\/\S+)/.exec(l)?.[1])
      .find((u) => u);
    assert(ws, `the inspector's URL on stderr:\n${server.stderr.join("\n")}`);
    const inspector = await inspectScripts(ws);
    try {
      for (const p of [`${P}/1.0.0/download/linux/amd64`, `${M}/1.0.0.json`, `${M}/index.json`]) {
        const res = await fetch(`${server.url.replace(/\/$/, "")}${p}`);
        await res.body?.cancel();
        assertEquals(res.status, 200, p);
      }
      assertEquals(sigs(), sigsBefore, "the hits needed no signature check");
      await inspector.settled();
      // Sanity: the inspector does list the server's own modules.
      assert([...inspector.scripts].some((s) => s.endsWith("/lib/routes/mirror.ts")));
      assertEquals(loaded(inspector.scripts), [], "loaded by start-up and metadata hits");

      // Each one is loaded when its path is taken, and the test sees it.
      const page = await fetch(server.url);
      assertEquals(page.status, 200);
      assert((await page.text()).includes("<html"), "the status page");
      // Not the newest release: the version list's read-ahead (when the
      // cache was filled) covered that one.
      const miss = await fetch(`${server.url.replace(/\/$/, "")}${M}/0.9.0.json`);
      assertEquals(miss.status, 200, await miss.text());
      assertEquals(sigs(), sigsBefore + 1, "the miss verified its release's signature");
      await inspector.settled();
      const now = loaded(inspector.scripts).map((s) => s.split(":")[0]);
      assert(now.includes("OpenPGP"), `OpenPGP after a signature check: ${now}`);
      assert(now.includes("the status page"), `the status page after GET /: ${now}`);
    } finally {
      await inspector.close();
    }
  } finally {
    await fake.stop();
  }
});

Deno.test("each lazily listed subcommand has the name and summary of the command it loads", async () => {
  const loadedCommands = await Promise.all([...COMMANDS.keys()].map(async (name) => {
    const mod = await import(`../lib/commands/${name}.ts`);
    const cmd = Object.values(mod).find((v) =>
      typeof v === "object" && v !== null && (v as { name?: string }).name === name &&
      typeof (v as { run?: unknown }).run === "function"
    ) as { name: string; summary: string } | undefined;
    return cmd && { name: cmd.name, summary: cmd.summary };
  }));
  assertEquals(
    loadedCommands,
    [...COMMANDS.values()].map((c) => ({ name: c.name, summary: c.summary })),
  );
});
