/**
 * `repoxy lock`: the multi-platform lock file `terraform providers lock`
 * writes against the registry, made by Repoxy without the client downloading
 * any archive. The end-to-end test compares bytes with the real terraform's
 * own lock; the others pin the version choice, the error paths and the
 * completion of a lock file a network mirror made.
 */
import { createApp, serveApp } from "../lib/app.ts";
import { lockCommand } from "../lib/commands/lock.ts";
import { buildConfig, type Config } from "../lib/config/config.ts";
import { assert, assertEquals, assertMatch } from "../lib/deps/assert.ts";
import { join } from "../lib/deps/path.ts";
import { hashZipH1 } from "../lib/integrity/dirhash.ts";
import { memoryLogger } from "../lib/base/log.ts";
import { currentPlatform } from "../lib/protocol/provider_address.ts";
import { platformString } from "../lib/protocol/names.ts";
import {
  constraintsString,
  newestAllowed,
  parseConstraints,
} from "../lib/protocol/version_constraints.ts";
import { readFileProviders, readRequiredProviders } from "../lib/protocol/tf_config.ts";
import { formatLockFile } from "../lib/protocol/lockfile.ts";
import { type FakeRegistry, startFakeRegistry } from "./fake_registry.ts";
import { exists, tempDir } from "./_helpers.ts";
import { captureIo, runCli, writeConfig } from "./_cli.ts";
import { makeTestTls } from "./_tls.ts";
import { findTerraform, runTerraform, skip } from "./_terraform.ts";

const LOCK = ".terraform.lock.hcl";
const THREE = ["linux_amd64", "darwin_arm64", "windows_amd64"];
const HOST = platformString(currentPlatform());
/** Published platforms: the three locked, one never asked for, and this machine's. */
const PUBLISHED = [...new Set([...THREE, "linux_arm64", HOST])];

const PROVIDERS = [
  {
    namespace: "example",
    type: "alpha",
    versions: ["1.0.0", "1.1.0", "1.2.0-beta1", "2.0.0"].map((version) => ({
      version,
      platforms: PUBLISHED,
    })),
  },
  {
    namespace: "example",
    type: "gamma",
    versions: ["0.9.0", "1.0.0"].map((version) => ({ version, platforms: PUBLISHED })),
  },
  {
    namespace: "example",
    type: "delta",
    versions: ["1.9.0", "2.0.0-rc1"].map((version) => ({ version, platforms: PUBLISHED })),
  },
  {
    namespace: "example",
    type: "epsilon",
    versions: ["1.0.0", "1.4.0", "2.0.0"].map((version) => ({ version, platforms: PUBLISHED })),
  },
  {
    namespace: "hashicorp",
    type: "zeta",
    versions: ["3.0.0"].map((version) => ({ version, platforms: PUBLISHED })),
  },
];

/**
 * A child module (installed by "terraform get"): a provider only it needs,
 * and one more constraint on a provider the root needs too.
 */
const MODULE_TF = `terraform {
  required_providers {
    epsilon = { source = "example/epsilon", version = "~> 1.0" }
    alpha   = { source = "example/alpha", version = ">= 1.0.1" }
  }
}
resource "epsilon_thing" "y" {
  provider = epsilon
}
`;

/** A configuration exercising constraint resolution: a range, an old pin, a pinned pre-release. */
const MAIN_TF = `terraform {
  required_version = ">= 1.0"
  required_providers {
    alpha = {
      source  = "example/alpha"
      version = "~> 1.0"
    }
    gamma = {
      source  = "registry.terraform.io/example/gamma"
      version = ">= 0.1, < 1.0.0"
    }
    delta = {
      source  = "example/delta"
      version = "2.0.0-rc1"
    }
  }
}

module "m" {
  source = "./m"
}

# No required_providers entry: terraform implies hashicorp/zeta.
resource "zeta_thing" "x" {}

# The built-in provider: never locked.
data "terraform_remote_state" "s" {
  backend = "local"
}

locals {
  # Things the subset reader must step over.
  s = "\${var.x} { not a block"
  h = <<EOT
terraform {
  required_providers { bogus = { source = "bogus/bogus" } }
}
EOT
}
`;

function lockConfig(fake: FakeRegistry, cacheDir: string): Promise<Config> {
  return buildConfig({
    cacheDir,
    upstreams: { "registry.terraform.io": { url: fake.registryUrl } },
    egressAllow: fake.egressAllow,
  });
}

/** Runs `repoxy lock` in process against `config`. */
async function repoxyLock(config: Config, args: string[]) {
  const io = captureIo();
  const code = await lockCommand.run(args, {
    io,
    loadConfig: () => Promise.resolve(config),
  });
  return { code, out: io.outLines.join("\n"), err: io.errLines.join("\n") };
}

const platformArgs = (pls: string[]) => pls.flatMap((p) => ["--platform", p]);

/** Archive bodies the release host served (not the redirects), as filenames. */
function archiveDownloads(fake: FakeRegistry, from = 0): string[] {
  return fake.requests.slice(from).filter((r) =>
    r.server === "release" && r.method === "GET" && r.path.startsWith("/files/") &&
    r.path.endsWith(".zip")
  ).map((r) => r.path.split("/").pop()!).sort();
}

const NAME = "repoxy lock writes the lock terraform providers lock writes, byte for byte; " +
  "terraform init and providers lock accept it unchanged";
const TERRAFORM = await findTerraform();
if (!TERRAFORM) skip(NAME, "terraform is not on PATH");

Deno.test({ name: NAME, ignore: !TERRAFORM }, async () => {
  await using dir = await tempDir();
  await using fake = await startFakeRegistry({ providers: PROVIDERS });
  const config = await lockConfig(fake, join(dir.path, "cache"));
  const direct = `host "registry.terraform.io" {\n  services = {\n` +
    `    "providers.v1" = "${fake.registryUrl}/v1/providers/"\n  }\n}\n`;
  const work = async (name: string) => {
    const d = join(dir.path, name);
    await Deno.mkdir(d);
    await Deno.writeTextFile(join(d, "main.tf"), MAIN_TF);
    await Deno.mkdir(join(d, "m"));
    await Deno.writeTextFile(join(d, "m", "main.tf"), MODULE_TF);
    // Installs the module only (.terraform/modules/modules.json), no provider.
    const get = await runTerraform(["get", "-no-color"], { cwd: d, cliConfig: direct, home: d });
    assertEquals(get.code, 0, `terraform get failed:\n${get.stdout}\n${get.stderr}`);
    return d;
  };

  // The reference: terraform itself, against the registry.
  const tfDir = await work("terraform");
  let started = performance.now();
  const tf = await runTerraform(
    ["providers", "lock", "-no-color", ...THREE.map((p) => `-platform=${p}`)],
    { cwd: tfDir, cliConfig: direct, home: tfDir },
  );
  const tfMs = performance.now() - started;
  assertEquals(tf.code, 0, `terraform providers lock failed:\n${tf.stdout}\n${tf.stderr}`);
  const expected = await Deno.readTextFile(join(tfDir, LOCK));
  const tfArchives = archiveDownloads(fake);
  assertEquals(
    tfArchives.length,
    15,
    `terraform downloads 5 providers x 3 platforms: ${tfArchives}\n${expected}\n${tf.stdout}`,
  );

  // repoxy lock, cold cache: the same bytes.
  const rxDir = await work("repoxy");
  const before = fake.requests.length;
  started = performance.now();
  const cold = await repoxyLock(config, [rxDir, ...platformArgs(THREE)]);
  const coldMs = performance.now() - started;
  assertEquals(cold.code, 0, cold.err);
  const written = await Deno.readTextFile(join(rxDir, LOCK));
  assertEquals(written, expected);
  // Exactly the requested archives reached the cache, each once; linux_arm64 was not fetched
  // (its zh: comes from the signed SHA256SUMS).
  const fetched = archiveDownloads(fake, before);
  assertEquals(fetched, tfArchives);
  assert(!fetched.some((f) => f.includes("linux_arm64") && HOST !== "linux_arm64"));
  assertEquals((expected.match(/"zh:/g) ?? []).length, 5 * PUBLISHED.length);
  assertEquals((expected.match(/"h1:/g) ?? []).length, 15);
  // The module's constraint joined the root's; the implied provider is there.
  assertMatch(expected, /constraints = "~> 1\.0, >= 1\.0\.1"/);
  assertMatch(
    expected,
    /provider "registry\.terraform\.io\/hashicorp\/zeta" \{\n {2}version = "3\.0\.0"\n/,
  );
  // The h1: of each locked archive is the one computed from the upstream's bytes.
  for (
    const [type, version] of [
      ["alpha", "1.1.0"],
      ["gamma", "0.9.0"],
      ["delta", "2.0.0-rc1"],
      ["epsilon", "1.4.0"],
      ["zeta", "3.0.0"],
    ]
  ) {
    for (const pl of THREE) {
      const zip = join(dir.path, `${type}-${pl}.zip`);
      await Deno.writeFile(zip, fake.archive(type!, version!, pl).bytes);
      assert(written.includes(`"${await hashZipH1(zip)}"`), `${type} ${pl}`);
    }
  }

  // Warm cache, fresh directory: no archive download at all.
  const warmDir = await work("repoxy-warm");
  const mark = fake.requests.length;
  started = performance.now();
  const warm = await repoxyLock(config, [warmDir, ...platformArgs(THREE)]);
  const warmMs = performance.now() - started;
  assertEquals(warm.code, 0, warm.err);
  assertEquals(await Deno.readTextFile(join(warmDir, LOCK)), expected);
  assertEquals(archiveDownloads(fake, mark), []);
  // deno-lint-ignore no-console
  console.log(
    `FIGURE lock 5 providers x 3 platforms: terraform providers lock ${tfMs.toFixed(0)} ms ` +
      `(${tfArchives.length} archives downloaded); repoxy lock cold ${coldMs.toFixed(0)} ms, ` +
      `warm ${warmMs.toFixed(0)} ms (0 archives)`,
  );

  // terraform init on this machine through a Repoxy network mirror accepts the
  // lock and leaves it as it is; the client downloads only its own platform.
  const tls = await makeTestTls(join(dir.path, "tls"));
  const served = await createApp(
    await buildConfig({
      listen: "127.0.0.1:0",
      cacheDir: join(dir.path, "cache"),
      tls: { cert: tls.certPath, key: tls.keyPath },
      upstreams: { "registry.terraform.io": { url: fake.registryUrl } },
      egressAllow: fake.egressAllow,
    }),
    { log: memoryLogger() },
  );
  const server = serveApp(served);
  try {
    const initMark = fake.requests.length;
    const init = await runTerraform(["init", "-input=false", "-no-color"], {
      cwd: rxDir,
      cliConfig: `provider_installation {\n  network_mirror {\n    url = "${server.url}"\n  }\n}\n`,
      caCertFile: tls.caCertPath,
      home: rxDir,
    });
    assertEquals(init.code, 0, `terraform init failed:\n${init.stdout}\n${init.stderr}`);
    assert(!init.stdout.includes("Incomplete lock file"), init.stdout);
    assertEquals(await Deno.readTextFile(join(rxDir, LOCK)), expected);
    assertEquals(archiveDownloads(fake, initMark), [], "served from the cache lock filled");
  } finally {
    await server.shutdown(2_000);
  }

  // Every other platform: terraform's own check against the registry finds
  // nothing to add or change.
  const others = THREE.filter((p) => p !== HOST);
  const check = await runTerraform(
    ["providers", "lock", "-no-color", ...others.map((p) => `-platform=${p}`)],
    { cwd: rxDir, cliConfig: direct, home: rxDir },
  );
  assertEquals(check.code, 0, `${check.stdout}\n${check.stderr}`);
  assertMatch(check.stdout, /no need for changes/);
  assertEquals(await Deno.readTextFile(join(rxDir, LOCK)), expected);
});

Deno.test("version constraints: terraform's choice and its normalized constraints string", () => {
  const versions = ["0.9.0", "1.0.0", "1.1.0", "1.2.0-beta1", "2.0.0", "2.0.0-rc1", "1.10.3"];
  const pick = (c: string) => newestAllowed(parseConstraints(c), versions);
  assertEquals(pick(""), "2.0.0");
  assertEquals(pick("~> 1.0"), "1.10.3");
  assertEquals(pick("~> 1.1.0"), "1.1.0");
  assertEquals(pick(">= 0.1, < 1.0.0"), "0.9.0");
  assertEquals(pick("1.2.0-beta1"), "1.2.0-beta1");
  assertEquals(pick(">= 1.2.0-beta1, < 2.0.0"), "1.10.3", "pre-release only when named exactly");
  assertEquals(pick("~> 2.0, != 2.0.0"), undefined);
  assertEquals(pick("= 1.1"), "1.1.0");
  assertEquals(pick("> 9"), undefined);
  const norm = (c: string) => constraintsString(parseConstraints(c));
  assertEquals(norm("~> 1"), "~> 1.0");
  assertEquals(norm("~>1.2.0"), "~> 1.2.0");
  assertEquals(norm(">= 0.1, < 1.0.0"), ">= 0.1.0, < 1.0.0");
  assertEquals(norm("< 3.0, >= 2.1, >= 2.1.0"), ">= 2.1.0, < 3.0.0");
  assertEquals(norm("= 1.2"), "1.2.0");
  assertEquals(norm(""), "");
  // Each of these is what terraform 1.11 wrote (or printed) for the same input.
  assertEquals(
    norm(">= 1.9.0, >= 1.9, 1.9.0, ~> 1.9.0, ~> 1.9, <= 1.9.0, > 1.9.0-a"),
    "> 1.9.0-a, >= 1.9.0, 1.9.0, ~> 1.9.0, ~> 1.9, <= 1.9.0",
  );
  assertEquals(
    norm("~> 1, ~> 1.0, < 2, != 1.1.0, >= 1.0.0"),
    ">= 1.0.0, ~> 1.0, != 1.1.0, < 2.0.0",
  );
  assertEquals(norm("> 0.1, <= 0.9.0, != 0.5"), "> 0.1.0, != 0.5.0, <= 0.9.0");
  assertEquals(norm("1.1.0-rc1, >= 1.0"), ">= 1.0.0, 1.1.0-rc1");
  assertEquals(pick("1.2.0-beta1, >= 1.0"), "1.2.0-beta1");
  assertEquals(pick(">= 1.2.0-beta1, <= 1.2.0-beta1"), undefined, "no exact term names it");
  assertEquals(pick("~> 1"), "1.10.3");
  assertEquals(pick("!= 0.9"), "2.0.0");
});

Deno.test("tf reader: required_providers from terraform blocks only, legacy form, merged terms", () => {
  const reqs = readRequiredProviders(
    MAIN_TF + `terraform {\n  required_providers {\n    old = "~> 1.0"\n    aws = {\n` +
      `      source = "hashicorp/aws"\n      configuration_aliases = [aws.east, aws.west]\n    }\n  }\n}\n` +
      `resource "x" "y" { z = { source = "nope/nope" } }\n`,
    "main.tf",
  );
  assertEquals(
    reqs.map((r) => [r.localName, r.source, r.version]),
    [
      ["alpha", "example/alpha", "~> 1.0"],
      ["gamma", "registry.terraform.io/example/gamma", ">= 0.1, < 1.0.0"],
      ["delta", "example/delta", "2.0.0-rc1"],
      ["old", undefined, "~> 1.0"],
      ["aws", "hashicorp/aws", undefined],
    ],
  );
});

Deno.test("tf reader: providers used without a declaration (resources, data, check, provider)", () => {
  const found = readFileProviders(
    `provider "aws" {\n  region = "x"\n}\n` +
      `resource "google_thing" "a" {\n  provider = google-beta.west\n}\n` +
      `resource "random_id" "b" {\n  keepers = { provider = "not this" }\n}\n` +
      `data "http" "c" {}\n` +
      `ephemeral "vault_secret" "d" {}\n` +
      `check "e" {\n  data "dns_a_record_set" "f" {}\n  assert {\n    condition = true\n` +
      `    error_message = "\${resource.x}"\n  }\n}\n` +
      `module "g" {\n  source = "./g"\n  providers = { aws = aws.west }\n}\n` +
      `output "h" {\n  value = <<-EOT\n    resource "nope_x" "y" {}\n  EOT\n}\n`,
    "x.tf",
  );
  assertEquals(found.required, []);
  assertEquals(found.used.map((u) => u.localName), [
    "aws",
    "google-beta",
    "random",
    "http",
    "vault",
    "dns",
  ]);
});

Deno.test("lock file writer: terraform's layout (header, sorted providers and hashes)", () => {
  const text = formatLockFile([
    {
      provider: { hostname: "registry.terraform.io", namespace: "b", type: "x" },
      version: "1.0.0",
      hashes: ["zh:02", "h1:b", "zh:01", "h1:b"],
    },
    {
      provider: { hostname: "registry.terraform.io", namespace: "a", type: "y" },
      version: "2.0.0",
      constraints: "~> 2.0",
      hashes: ["zh:ff"],
    },
  ]);
  assertEquals(
    text,
    `# This file is maintained automatically by "terraform init".
# Manual edits may be lost in future updates.

provider "registry.terraform.io/a/y" {
  version     = "2.0.0"
  constraints = "~> 2.0"
  hashes = [
    "zh:ff",
  ]
}

provider "registry.terraform.io/b/x" {
  version = "1.0.0"
  hashes = [
    "h1:b",
    "zh:01",
    "zh:02",
  ]
}
`,
  );
});

/** A fake, a cache and a work dir holding `files`; lock runs against them. */
async function setup(files: Record<string, string>) {
  const dir = await tempDir();
  const fake = await startFakeRegistry({ providers: PROVIDERS });
  const config = await lockConfig(fake, join(dir.path, "cache"));
  const wd = join(dir.path, "work");
  await Deno.mkdir(wd);
  for (const [name, text] of Object.entries(files)) await Deno.writeTextFile(join(wd, name), text);
  return {
    fake,
    config,
    wd,
    run: (args: string[]) => repoxyLock(config, [wd, ...args]),
    async [Symbol.asyncDispose]() {
      await fake.stop();
      await dir[Symbol.asyncDispose]();
    },
  };
}

const ALPHA_TF =
  `terraform {\n  required_providers {\n    alpha = {\n      source  = "example/alpha"\n` +
  `      version = "~> 1.0"\n    }\n  }\n}\n`;

Deno.test("repoxy lock completes a lock file a network mirror made (host h1: only)", async () => {
  await using s = await setup({ "main.tf": ALPHA_TF });
  // The full lock, as reference.
  assertEquals((await s.run(platformArgs(THREE))).code, 0);
  const full = await Deno.readTextFile(join(s.wd, LOCK));
  // What terraform init through a network mirror writes: one h1: for linux_amd64.
  const h1 = /"(h1:[^"]+)"/.exec(full)![1]!;
  const zip = join(s.wd, "a.zip");
  const hostH1s: string[] = [];
  for (const pl of THREE) {
    await Deno.writeFile(zip, s.fake.archive("alpha", "1.1.0", pl).bytes);
    hostH1s.push(await hashZipH1(zip));
  }
  await Deno.remove(zip);
  assert(hostH1s.includes(h1));
  const mirrorMade = `# This file is maintained automatically by "terraform init".
# Manual edits may be lost in future updates.

provider "registry.terraform.io/example/alpha" {
  version     = "1.1.0"
  constraints = "~> 1.0"
  hashes = [
    "${hostH1s[0]}",
  ]
}
`;
  await Deno.writeTextFile(join(s.wd, LOCK), mirrorMade);
  const mark = s.fake.requests.length;
  const r = await s.run(platformArgs(THREE));
  assertEquals(r.code, 0, r.err);
  assertEquals(await Deno.readTextFile(join(s.wd, LOCK)), full);
  assertEquals(archiveDownloads(s.fake, mark), [], "all three archives were cached already");
  // Run again: nothing to change, the file is not rewritten.
  const again = await s.run(platformArgs(THREE));
  assertEquals(again.code, 0);
  assertMatch(again.out, /already complete/);

  // Offline (cache alone, no upstream): the same lock, no request at all.
  const offline = await buildConfig({
    cacheDir: s.config.cacheDir,
    offline: true,
    upstreams: { "registry.terraform.io": { url: s.fake.registryUrl } },
  });
  await Deno.writeTextFile(join(s.wd, LOCK), mirrorMade);
  const quiet = s.fake.requests.length;
  const off = await repoxyLock(offline, [s.wd, ...platformArgs(THREE)]);
  assertEquals(off.code, 0, off.err);
  assertEquals(await Deno.readTextFile(join(s.wd, LOCK)), full);
  assertEquals(s.fake.requests.length, quiet);

  // Upstream down: the cached metadata and archives still make the lock.
  await s.fake.stop();
  await Deno.writeTextFile(join(s.wd, LOCK), mirrorMade);
  const down = await s.run(platformArgs(THREE));
  assertEquals(down.code, 0, down.err);
  assertEquals(await Deno.readTextFile(join(s.wd, LOCK)), full);

  // Without any .tf file the lock file alone names what to lock; the lock
  // file's path names its directory.
  await Deno.remove(join(s.wd, "main.tf"));
  await Deno.writeTextFile(join(s.wd, LOCK), mirrorMade);
  assertEquals((await repoxyLock(s.config, [join(s.wd, LOCK), ...platformArgs(THREE)])).code, 0);
  assertEquals(await Deno.readTextFile(join(s.wd, LOCK)), full);
});

Deno.test("repoxy lock refuses a lock file pinning bytes the publisher did not sign", async () => {
  const bad = `provider "registry.terraform.io/example/alpha" {
  version = "1.1.0"
  hashes = [
    "zh:${"0".repeat(64)}",
  ]
}
`;
  await using s = await setup({ [LOCK]: bad });
  const r = await s.run(platformArgs(["linux_amd64"]));
  assertEquals(r.code, 1);
  assertMatch(r.err, /does not list: the locked archives are not the published ones/);
  assertEquals(await Deno.readTextFile(join(s.wd, LOCK)), bad, "left unchanged");
});

Deno.test("repoxy lock: clear errors and exit codes, nothing written on failure", async () => {
  await using s = await setup({ "main.tf": ALPHA_TF });
  const lockPath = join(s.wd, LOCK);

  // A platform the signed SHA256SUMS does not list.
  let r = await s.run(platformArgs(["linux_amd64", "freebsd_arm"]));
  assertEquals(r.code, 1);
  assertMatch(r.err, /freebsd_arm is not in the publisher's signed SHA256SUMS of 1\.1\.0/);
  assertEquals(await exists(lockPath), false);

  // No version matches.
  await Deno.writeTextFile(join(s.wd, "main.tf"), ALPHA_TF.replace("~> 1.0", "~> 7.0"));
  r = await s.run([]);
  assertEquals(r.code, 1);
  assertMatch(r.err, /no available release matches "~> 7\.0"/);
  assertEquals(await exists(lockPath), false);

  // An unknown provider.
  await Deno.writeTextFile(
    join(s.wd, "main.tf"),
    ALPHA_TF.replace("example/alpha", "example/nope"),
  );
  r = await s.run([]);
  assertEquals(r.code, 1);
  assertMatch(r.err, /registry\.terraform\.io\/example\/nope .*cannot list its versions/);
  assertEquals(await exists(lockPath), false);

  // A registry the config does not name: usage.
  await Deno.writeTextFile(
    join(s.wd, "main.tf"),
    ALPHA_TF.replace("example/alpha", "other.example.com/example/alpha"),
  );
  r = await s.run([]);
  assertEquals(r.code, 2);
  assertMatch(r.err, /registry other\.example\.com is not in "upstreams"/);

  // A platform that is no platform, a second directory: usage.
  r = await s.run(["--platform", "linux"]);
  assertEquals(r.code, 2);
  r = await s.run([s.wd]);
  assertEquals(r.code, 2);

  // A bad constraint, an empty directory: usage.
  await Deno.writeTextFile(join(s.wd, "main.tf"), ALPHA_TF.replace("~> 1.0", "~> one"));
  r = await s.run([]);
  assertEquals(r.code, 2);
  assertMatch(r.err, /invalid version constraint "~> one"/);
  await Deno.remove(join(s.wd, "main.tf"));
  r = await s.run([]);
  assertEquals(r.code, 2);
  assertMatch(r.err, /neither a \.terraform\.lock\.hcl nor any \*\.tf file/);
  // No archive was fetched for any of the failed runs but the first's linux_amd64.
  assertEquals(archiveDownloads(s.fake), ["terraform-provider-alpha_1.1.0_linux_amd64.zip"]);
});

Deno.test("repoxy lock as a process: the service's permissions suffice", async () => {
  await using s = await setup({ "main.tf": ALPHA_TF });
  const cfg = await writeConfig(join(s.wd, ".."), {
    cacheDir: s.config.cacheDir,
    upstreams: { "registry.terraform.io": { url: s.fake.registryUrl } },
    egressAllow: s.fake.egressAllow,
  });
  const r = await runCli(["lock", "-c", cfg, "-p", "linux_amd64,darwin_arm64", s.wd]);
  assertEquals(r.code, 0, r.stderr);
  assertMatch(
    r.stdout,
    /lock: .* written: 1 provider\(s\) for linux_amd64, darwin_arm64; 2 archive/,
  );
  assert(
    r.stdout.includes(
      `registry.terraform.io/example/alpha 1.1.0: 2 h1:, ${PUBLISHED.length} zh:\n`,
    ),
    r.stdout,
  );
  const text = await Deno.readTextFile(join(s.wd, LOCK));
  assertEquals((text.match(/"h1:/g) ?? []).length, 2);
  assertEquals((text.match(/"zh:/g) ?? []).length, PUBLISHED.length);
  assertEquals(archiveDownloads(s.fake), [
    "terraform-provider-alpha_1.1.0_darwin_arm64.zip",
    "terraform-provider-alpha_1.1.0_linux_amd64.zip",
  ]);
});

Deno.test("repoxy lock keeps an OpenTofu lock file OpenTofu's (header, registry)", async () => {
  await using dir = await tempDir();
  await using fake = await startFakeRegistry({ providers: PROVIDERS });
  const config = await buildConfig({
    cacheDir: join(dir.path, "cache"),
    upstreams: { "registry.opentofu.org": { url: fake.registryUrl } },
    egressAllow: fake.egressAllow,
  });
  const tofuLock = `# This file is maintained automatically by "tofu init".
# Manual edits may be lost in future updates.

provider "registry.opentofu.org/example/gamma" {
  version = "1.0.0"
}
`;
  await Deno.writeTextFile(join(dir.path, LOCK), tofuLock);
  const r = await repoxyLock(config, [dir.path, ...platformArgs(["linux_amd64"])]);
  assertEquals(r.code, 0, r.err);
  const text = await Deno.readTextFile(join(dir.path, LOCK));
  const zip = join(dir.path, "g.zip");
  await Deno.writeFile(zip, fake.archive("gamma", "1.0.0", "linux_amd64").bytes);
  assertEquals(
    text,
    formatLockFile(
      [{
        provider: { hostname: "registry.opentofu.org", namespace: "example", type: "gamma" },
        version: "1.0.0",
        hashes: [
          await hashZipH1(zip),
          ...fake.archives.filter((a) => a.type === "gamma" && a.version === "1.0.0").map((a) =>
            `zh:${a.sha256}`
          ),
        ],
      }],
      tofuLock.split("\n\n")[0] + "\n",
    ),
  );
  assert(text.startsWith(`# This file is maintained automatically by "tofu init".\n`));
});

Deno.test("repoxy lock checks a lock made on another platform against that platform's archive", async () => {
  await using s = await setup({ "main.tf": ALPHA_TF });
  const zip = join(s.wd, "..", "d.zip");
  const h1Of = async (pl: string) => {
    await Deno.writeFile(zip, s.fake.archive("alpha", "1.1.0", pl).bytes);
    return await hashZipH1(zip);
  };
  const macH1 = await h1Of("darwin_arm64");
  const linuxH1 = await h1Of("linux_amd64");
  // What terraform init through a network mirror writes on a Mac.
  const macLock = `# This file is maintained automatically by "terraform init".
# Manual edits may be lost in future updates.

provider "registry.terraform.io/example/alpha" {
  version     = "1.1.0"
  constraints = "~> 1.0"
  hashes = [
    "${macH1}",
  ]
}
`;
  const lockPath = join(s.wd, LOCK);
  await Deno.writeTextFile(lockPath, macLock);
  // Linux alone cannot vouch for the Mac's h1: refused, with the way out.
  let r = await s.run(platformArgs(["linux_amd64"]));
  assertEquals(r.code, 1);
  assertMatch(r.err, /add that one with --platform/);
  assertEquals(await Deno.readTextFile(lockPath), macLock);
  // Asked for both, it checks and completes.
  r = await s.run(platformArgs(["linux_amd64", "darwin_arm64"]));
  assertEquals(r.code, 0, r.err);
  const both = await Deno.readTextFile(lockPath);
  assert(both.includes(`"${macH1}"`) && both.includes(`"${linuxH1}"`));
  // Once the Mac archive is cached, Linux alone will do, without a download.
  await Deno.writeTextFile(lockPath, macLock);
  const mark = s.fake.requests.length;
  r = await s.run(platformArgs(["linux_amd64"]));
  assertEquals(r.code, 0, r.err);
  assertEquals(await Deno.readTextFile(lockPath), both);
  assertEquals(archiveDownloads(s.fake, mark), []);
});

Deno.test("repoxy lock leaves a locked provider the configuration does not require as it is", async () => {
  await using s = await setup({ "main.tf": ALPHA_TF });
  const gamma = `provider "registry.terraform.io/example/gamma" {
  version     = "1.0.0"
  constraints = "~> 1.0"
  hashes = [
    "h1:notcheckedbecausenotrequired=",
  ]
}
`;
  await Deno.writeTextFile(
    join(s.wd, LOCK),
    `# This file is maintained automatically by "terraform init".\n` +
      `# Manual edits may be lost in future updates.\n\n${gamma}`,
  );
  const r = await s.run(platformArgs(["linux_amd64"]));
  assertEquals(r.code, 0, r.err);
  assertMatch(r.err, /example\/gamma .* is not required by the configuration; left as it is/);
  const text = await Deno.readTextFile(join(s.wd, LOCK));
  assert(text.endsWith(`\n${gamma}`), text);
  assertMatch(
    text,
    /provider "registry\.terraform\.io\/example\/alpha" \{\n {2}version {5}= "1\.1\.0"/,
  );
  assertEquals(archiveDownloads(s.fake), ["terraform-provider-alpha_1.1.0_linux_amd64.zip"]);
});

Deno.test("repoxy lock works on a mirror whose clients need tokens (it is no client)", async () => {
  await using dir = await tempDir();
  await using fake = await startFakeRegistry({ providers: PROVIDERS });
  const config = await buildConfig({
    cacheDir: join(dir.path, "cache"),
    upstreams: { "registry.terraform.io": { url: fake.registryUrl } },
    egressAllow: fake.egressAllow,
    auth: { tokens: [{ name: "team", token: "team-token-0123456789abcdef" }], protectOps: true },
  });
  await Deno.writeTextFile(join(dir.path, "main.tf"), ALPHA_TF);
  const r = await repoxyLock(config, [dir.path, ...platformArgs(["linux_amd64", "darwin_arm64"])]);
  assertEquals(r.code, 0, r.err);
  const text = await Deno.readTextFile(join(dir.path, LOCK));
  assertEquals((text.match(/"h1:/g) ?? []).length, 2);
  assertEquals(archiveDownloads(fake), [
    "terraform-provider-alpha_1.1.0_darwin_arm64.zip",
    "terraform-provider-alpha_1.1.0_linux_amd64.zip",
  ]);
});
