/**
 * Measures the freshness bound of issue 11 point 1 with the real clock: the
 * seconds from a release's publication upstream to the first successful
 * `terraform init` pinning it through Repoxy, in both protocols.
 *
 * Repoxy runs as a real process (`main.ts serve`) with the DEFAULT config
 * (no `metadataTtl`), in front of the fake registry. Per mode: a warm
 * `init` caches the version list, the release is published right after it
 * (so the list was fetched just before publication: the worst case), then a
 * pinned `init` is started every second in a fresh directory until one
 * succeeds. Prints, per mode, when the list was fetched, when the first
 * successful init started and ended, and the last failing attempt.
 *
 *   deno run -P=bench bench/freshness_bound.ts [--root DIR] [--ttl DURATION]
 *
 * `--root` runs another checkout's main.ts (e.g. the code before the change);
 * `--ttl` sets `metadataTtl`; `--give-up SECONDS` (default 120) ends a mode.
 * @module
 */
import { parseArgs } from "../lib/deps/cli.ts";
import { dirname, fromFileUrl, join, resolve } from "../lib/deps/path.ts";
import { startFakeRegistry } from "../tests/fake_registry.ts";
import { makeTestTls } from "../tests/_tls.ts";
import { spawnRepoxy } from "../tests/_process.ts";
import { requiredProvidersTf, runTerraform } from "../tests/_terraform.ts";

const { values: args } = parseArgs({
  args: Deno.args,
  options: { root: { type: "string" }, ttl: { type: "string" }, "give-up": { type: "string" } },
});
const ROOT = resolve(args.root ?? join(dirname(fromFileUrl(import.meta.url)), ".."));
const GIVE_UP_S = Number(args["give-up"] ?? 120);
const PLATFORMS = ["linux_amd64", "darwin_arm64"];

async function measure(mode: "mirror" | "registry") {
  const work = await Deno.makeTempDir({ prefix: "repoxy-fresh-" });
  try {
    return await measureIn(work, mode);
  } finally {
    await Deno.remove(work, { recursive: true });
  }
}

async function measureIn(work: string, mode: "mirror" | "registry") {
  const tls = mode === "mirror" ? await makeTestTls(join(work, "tls")) : undefined;
  await using fake = await startFakeRegistry({
    providers: [{
      namespace: "example",
      type: "gamma",
      versions: [{ version: "3.6.0", platforms: PLATFORMS }],
    }],
    versionValidators: "etag",
  });
  const configFile = join(work, "repoxy.json");
  await Deno.writeTextFile(
    configFile,
    JSON.stringify({
      cacheDir: join(work, "cache"),
      ...(tls ? { tls: { cert: tls.certPath, key: tls.keyPath } } : {}),
      upstreams: { "registry.terraform.io": { url: fake.registryUrl } },
      egressAllow: fake.egressAllow,
      ...(args.ttl ? { metadataTtl: args.ttl } : {}),
    }),
  );
  await using repoxy = await spawnRepoxy(Deno.execPath(), [
    "run",
    "-P=serve",
    join(ROOT, "main.ts"),
    "serve",
    "--config",
    configFile,
    "--listen",
    "127.0.0.1:0",
  ], { cwd: ROOT, env: { HOME: work } });
  const cliConfig = mode === "mirror"
    ? `provider_installation {\n  network_mirror {\n    url = "${repoxy.url}"\n  }\n}\n`
    : `host "registry.terraform.io" {\n  services = {\n    "providers.v1" = "${repoxy.url}v1/providers/registry.terraform.io/"\n  }\n}\n`;
  let n = 0;
  const init = async (version: string) => {
    const dir = join(work, `run${n++}`);
    await Deno.mkdir(dir);
    await Deno.writeTextFile(
      join(dir, "main.tf"),
      requiredProvidersTf([{ name: "gamma", source: "example/gamma", version }]),
    );
    return await runTerraform(["init", "-input=false", "-no-color"], {
      cwd: dir,
      cliConfig,
      ...(tls ? { caCertFile: tls.caCertPath } : {}),
      home: dir,
    });
  };
  const listFetches = () =>
    fake.requests.filter((r) => r.path === "/v1/providers/example/gamma/versions");

  const warm = await init(">= 3.6.0");
  if (warm.code !== 0) throw new Error(`warm init failed:\n${warm.stdout}\n${warm.stderr}`);
  const fetchedAt = performance.now();
  await fake.publish("example", "gamma", { version: "3.7.0", platforms: PLATFORMS });
  const published = performance.now();
  const s = (t: number) => ((t - published) / 1000).toFixed(1);
  let lastFail: string | undefined;
  let attempts = 0;
  while ((performance.now() - published) / 1000 < GIVE_UP_S) {
    const started = performance.now();
    attempts++;
    const r = await init("3.7.0");
    const ended = performance.now();
    if (r.code === 0) {
      return {
        mode,
        listFetchedBeforePublication: `${((published - fetchedAt) / 1000).toFixed(2)} s`,
        attempts,
        lastFailingInitStarted: lastFail ?? "-",
        firstSuccessStarted: `${s(started)} s`,
        firstSuccessEnded: `${s(ended)} s`,
        upstreamListRequests: listFetches().length,
        conditional: listFetches().filter((x) => x.headers.has("if-none-match")).length,
      };
    }
    lastFail = `${s(started)} s`;
    const wait = 1_000 - (performance.now() - started);
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
  }
  return { mode, result: `not installable after ${GIVE_UP_S} s`, attempts, lastFail };
}

for (const mode of ["mirror", "registry"] as const) {
  // deno-lint-ignore no-console
  console.log(JSON.stringify(await measure(mode)));
}
