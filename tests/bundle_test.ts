/**
 * The single-file build. `deno compile` cannot run here (no denort), so this
 * bundles main.ts into one file with `deno bundle` and runs that file from a
 * directory holding nothing else, with the compiled binary's permissions
 * narrowed further. A runtime read of our own sources, a dynamic import or a
 * permission the binary lacks would make it fail.
 */
import { assert, assertEquals, assertMatch } from "../lib/deps/assert.ts";
import { fromFileUrl, join } from "../lib/deps/path.ts";
import { VERSION } from "../lib/base/version.ts";
import { BAKED_ENV } from "../scripts/compile.ts";
import { parseExposition } from "./_prom.ts";
import { spawnRepoxy } from "./_process.ts";
import { startFakeRegistry } from "./fake_registry.ts";
import { tempDir, TWO_PROVIDERS } from "./_helpers.ts";

const ROOT = fromFileUrl(new URL("..", import.meta.url));

Deno.test("the bundled main.ts runs alone: --version, then serve, readyz, metrics, status page, SIGTERM", async () => {
  await using dir = await tempDir("repoxy-bundle-");
  const bundle = join(dir.path, "repoxy.js");
  const built = await new Deno.Command(Deno.execPath(), {
    args: ["bundle", "--frozen", "--platform", "deno", "-o", bundle, join(ROOT, "main.ts")],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).output();
  assertEquals(built.code, 0, new TextDecoder().decode(built.stderr));

  // Statically: one file whose only imports, static or dynamic, are Node built-ins
  // (modules loaded when first needed are inlined; node:zlib stays an import()).
  const code = (await Deno.readTextFile(bundle))
    .replace(/\/\*[\s\S]*?\*\//g, "")
    .replace(/^\s*\/\/.*$/gm, "");
  // Not `x.import(...)` nor a method named import (`import(data) {`): the X.509 library has both.
  for (const m of code.matchAll(/(?<![.\w$])import\s*\(\s*([^)]*)\)(?!\s*\{)/g)) {
    assertMatch(m[1]!, /^"node:[a-z_/]+"$/, "import() only of a Node built-in");
  }
  const specifiers = [...code.matchAll(/^\s*import\s[^;]*?from\s+"([^"]+)"/gm)].map((m) => m[1]!);
  assert(specifiers.length > 0);
  for (const s of specifiers) assertMatch(s, /^node:[a-z_/]+$/);
  assert(!code.includes(ROOT), "no path into the source tree");

  // Same permissions as the compiled binary, with files and network narrowed to the test.
  const run = [
    "run",
    "--no-config",
    "--no-lock",
    "--no-prompt",
    `--allow-read=${dir.path}`,
    `--allow-write=${dir.path}`,
    "--allow-net=127.0.0.1",
    `--allow-env=${BAKED_ENV.join(",")}`,
    bundle,
  ];
  const version = await new Deno.Command(Deno.execPath(), {
    args: [...run, "--version"],
    cwd: dir.path,
    stdout: "piped",
    stderr: "piped",
  }).output();
  assertEquals(version.code, 0, new TextDecoder().decode(version.stderr));
  assertEquals(new TextDecoder().decode(version.stdout), `repoxy ${VERSION}\n`);

  // ./repoxy.json is found by the lookup order; cacheDir is relative to it.
  await using fake = await startFakeRegistry({ providers: TWO_PROVIDERS });
  await Deno.writeTextFile(
    join(dir.path, "repoxy.json"),
    JSON.stringify({
      cacheDir: "cache",
      logFormat: "json",
      upstreams: { "registry.terraform.io": { url: fake.registryUrl } },
      egressAllow: fake.egressAllow,
    }),
  );
  await using p = await spawnRepoxy(Deno.execPath(), [...run, "--listen", "127.0.0.1:0"], {
    cwd: dir.path,
    env: { HOME: dir.path },
  });
  const health = await fetch(p.url + "-/healthz");
  assertEquals(health.status, 200);
  assertEquals(await health.json(), { status: "ok", version: VERSION });
  const ready = await fetch(p.url + "-/readyz");
  assertEquals(ready.status, 200);
  assertEquals((await ready.json()).status, "ready");
  const metrics = await fetch(p.url + "-/metrics");
  assertEquals(metrics.status, 200);
  const m = parseExposition(await metrics.text());
  assertEquals(m.value("repoxy_build_info", { version: VERSION }), 1);
  assertEquals(m.value("repoxy_http_requests_total", { route: "health", status: "200" }), 1);
  assert(m.value("process_resident_memory_bytes") > 0);
  // A real miss through the bundle: upstream, verification, atomic store.
  const fa = fake.archive("beta", "2.3.4", "linux_arm64");
  const zip = await fetch(`${p.url}registry.terraform.io/example/beta/${fa.filename}`);
  assertEquals(zip.status, 200);
  assertEquals(new Uint8Array(await zip.arrayBuffer()), fa.bytes);
  const page = await fetch(p.url);
  assertEquals(page.status, 200);
  assertMatch(await page.text(), /<title>Repoxy /);

  const status = await p.stop("SIGTERM");
  assertEquals(status.code, 0, p.stderr.join("\n"));
  const records = p.stderr.map((l) => JSON.parse(l) as Record<string, unknown>);
  const started = records.find((r) => r.msg === "repoxy started")!;
  assertEquals(started.config, join(dir.path, "repoxy.json"));
  assertEquals(started.configSource, "cwd");
  assertEquals(started.cacheDir, join(dir.path, "cache"));
  const stored = join(dir.path, "cache", "packages", "registry.terraform.io", "example", "beta");
  assertEquals(await Deno.readFile(join(stored, fa.filename)), fa.bytes);
  assert(records.some((r) => r.msg === "shutting down"));
  assertEquals(p.stdout, []);
});
