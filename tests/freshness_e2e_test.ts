/**
 * End to end with the real terraform CLI, both protocols (issue 11 point 1):
 * a release published upstream after Repoxy cached the version list becomes
 * installable once the list's freshness (the DEFAULT `metadataTtl`, 30 s) has
 * run out: pinned, from a teammate's lock file, and through `init -upgrade`.
 *
 * The app runs in process with the default config and a clock the test
 * moves (the server, sockets and terraform are real): the 30 s are skipped,
 * not slept, and nothing depends on how fast the machine is. (The figure
 * with the real clock, publication to a successful init, is measured by
 * scripts/measure_freshness.ts.)
 */
import { createApp, serveApp } from "../lib/app.ts";
import { buildConfig, DEFAULT_METADATA_TTL_MS } from "../lib/config/config.ts";
import { assert, assertEquals, assertMatch } from "../lib/deps/assert.ts";
import { join } from "../lib/deps/path.ts";
import { hashZipH1 } from "../lib/integrity/dirhash.ts";
import { memoryLogger } from "../lib/base/log.ts";
import { type FakeRegistry, startFakeRegistry } from "./fake_registry.ts";
import { tempDir } from "./_helpers.ts";
import { makeTestTls, type TestTls } from "./_tls.ts";
import {
  findTerraform,
  parseLockFile,
  requiredProvidersTf,
  runTerraform,
  skip,
} from "./_terraform.ts";

const NAME = "a release published upstream is installable through Repoxy once the list is stale";
const ADDRESS = "registry.terraform.io/example/gamma";
const PLATFORMS = ["linux_amd64", "darwin_arm64", "windows_amd64"];

// Decided before registration, so a missing terraform is reported as ignored,
// never as passed.
const TERRAFORM = await findTerraform();
if (!TERRAFORM) skip(NAME, "terraform is not on PATH");

/** A `.terraform.lock.hcl` as a teammate's `init` against the registry wrote it. */
async function teammateLock(fake: FakeRegistry, dir: string): Promise<string> {
  const zip = join(dir, "teammate.zip");
  await Deno.writeFile(zip, fake.archive("gamma", "3.7.0", "linux_amd64").bytes);
  const zh = fake.archives.filter((a) => a.type === "gamma" && a.version === "3.7.0")
    .map((a) => `zh:${a.sha256}`);
  const hashes = [await hashZipH1(zip), ...zh.sort()];
  return [
    `# This file is maintained automatically by "terraform init".`,
    `# Manual edits may be lost in future updates.`,
    ``,
    `provider "${ADDRESS}" {`,
    `  version     = "3.7.0"`,
    `  constraints = ">= 3.6.0"`,
    `  hashes = [`,
    ...hashes.map((h) => `    "${h}",`),
    `  ]`,
    `}`,
    ``,
  ].join("\n");
}

async function scenario(mode: "mirror" | "registry") {
  await using dir = await tempDir();
  const tls: TestTls | undefined = mode === "mirror"
    ? await makeTestTls(join(dir.path, "tls"))
    : undefined;
  await using fake = await startFakeRegistry({
    providers: [{
      namespace: "example",
      type: "gamma",
      versions: [{ version: "3.6.0", platforms: PLATFORMS }],
    }],
    versionValidators: "etag",
  });
  // The defaults, apart from where things are: metadataTtl is not set.
  const config = await buildConfig({
    listen: "127.0.0.1:0",
    cacheDir: join(dir.path, "cache"),
    ...(tls ? { tls: { cert: tls.certPath, key: tls.keyPath } } : {}),
    upstreams: { "registry.terraform.io": { url: fake.registryUrl } },
    egressAllow: fake.egressAllow,
  });
  assertEquals(config.metadataTtlMs, DEFAULT_METADATA_TTL_MS);
  const clock = { t: Date.now() };
  const log = memoryLogger();
  const app = await createApp(config, { log, now: () => clock.t });
  const server = serveApp(app);
  try {
    const cliConfig = mode === "mirror"
      ? `provider_installation {\n  network_mirror {\n    url = "${server.url}"\n  }\n}\n`
      : [
        `host "registry.terraform.io" {`,
        `  services = {`,
        `    "providers.v1" = "${server.url}v1/providers/registry.terraform.io/"`,
        `    "modules.v1"   = "${server.url}v1/modules/registry.terraform.io/"`,
        `  }`,
        `}`,
        ``,
      ].join("\n");
    const init = async (name: string, version: string, extra: string[] = [], lock?: string) => {
      const work = join(dir.path, name);
      await Deno.mkdir(work, { recursive: true });
      await Deno.writeTextFile(
        join(work, "main.tf"),
        requiredProvidersTf([{ name: "gamma", source: "example/gamma", version }]),
      );
      if (lock !== undefined) await Deno.writeTextFile(join(work, ".terraform.lock.hcl"), lock);
      const r = await runTerraform(["init", "-input=false", "-no-color", ...extra], {
        cwd: work,
        cliConfig,
        ...(tls ? { caCertFile: tls.caCertPath } : {}),
        home: work,
      });
      const locked = r.code === 0
        ? parseLockFile(await Deno.readTextFile(join(work, ".terraform.lock.hcl"))).get(ADDRESS)
        : undefined;
      return { ...r, version: locked?.version, out: `${r.stdout}\n${r.stderr}` };
    };
    const lists = () => fake.count((r) => r.path === "/v1/providers/example/gamma/versions");

    // Warm: 3.6.0 is the newest, and the list is now cached.
    const warm = await init("upgrade", ">= 3.6.0");
    assertEquals(warm.code, 0, warm.out);
    assertEquals(warm.version, "3.6.0");
    assertEquals(lists(), 1);

    await fake.publish("example", "gamma", { version: "3.7.0", platforms: PLATFORMS });
    // While the list is fresh it is served from memory, without the release.
    clock.t += DEFAULT_METADATA_TTL_MS - 1_000;
    const early = await init("early", "3.7.0");
    assert(early.code !== 0, "3.7.0 must not be offered from the fresh list");
    assertMatch(early.out, /no available releases match/);
    assertEquals(lists(), 1, "no upstream request while the list is fresh");

    // 30 s after the list was fetched (so at most 30 s after publication).
    clock.t += 1_000;
    const pinned = await init("pinned", "3.7.0");
    assertEquals(pinned.code, 0, pinned.out);
    assertEquals(pinned.version, "3.7.0");
    const fromLock = await init("lock", ">= 3.6.0", [], await teammateLock(fake, dir.path));
    assertEquals(fromLock.code, 0, fromLock.out);
    assertEquals(fromLock.version, "3.7.0");
    const upgraded = await init("upgrade", ">= 3.6.0", ["-upgrade"]);
    assertEquals(upgraded.code, 0, upgraded.out);
    assertEquals(upgraded.version, "3.7.0");
    // One revalidation served all three (fresh again after it), and it is logged.
    assertEquals(lists(), 2);
    const revalidation = fake.requests.filter((r) =>
      r.path === "/v1/providers/example/gamma/versions"
    )[1]!;
    assert(revalidation.headers.get("if-none-match"), "the revalidation is conditional");
    assert(
      log.records.some((r) => r.msg === "request" && r.cache === "miss" && r.status === 200),
    );
    // The installed archive is the upstream's.
    await app.settle();
    assertEquals(
      await Deno.readFile(
        join(
          config.cacheDir,
          "packages",
          "registry.terraform.io",
          "example",
          "gamma",
          "terraform-provider-gamma_3.7.0_linux_amd64.zip",
        ),
      ),
      fake.archive("gamma", "3.7.0", "linux_amd64").bytes,
    );
  } finally {
    await server.shutdown(2_000);
  }
}

Deno.test({ name: `${NAME} (network mirror)`, ignore: !TERRAFORM }, () => scenario("mirror"));
Deno.test({ name: `${NAME} (registry protocol)`, ignore: !TERRAFORM }, () => scenario("registry"));
