/**
 * Air gap: `repoxy export` writes a filesystem/network mirror tree,
 * `repoxy import` ingests it (or `terraform providers mirror` output) checking
 * every hash, and an offline Repoxy serves the result to `terraform init`.
 */
import { exportCache } from "../lib/commands/export.ts";
import { importTree } from "../lib/commands/import.ts";
import { warm } from "../lib/commands/warm.ts";
import { buildConfig, loadConfig } from "../lib/config/config.ts";
import { createApp, serveApp } from "../lib/app.ts";
import { assert, assertEquals, assertMatch, assertRejects } from "../lib/deps/assert.ts";
import { join } from "../lib/deps/path.ts";
import { hashZipH1 } from "../lib/integrity/dirhash.ts";
import { memoryLogger } from "../lib/base/log.ts";
import { currentPlatform } from "../lib/protocol/provider_address.ts";
import { platformString } from "../lib/protocol/names.ts";
import { startFakeRegistry } from "./fake_registry.ts";
import { runCli, writeConfig } from "./_cli.ts";
import {
  jsonOf,
  listDir,
  makeTestApp,
  sha256Hex,
  tempDir,
  tempLeftovers,
  TWO_PROVIDERS,
} from "./_helpers.ts";
import {
  lockedHashes,
  requiredProviders,
  runTerraform,
  terraformOrSkip,
} from "./_terraform_cli.ts";

const H = "registry.terraform.io";
const LINUX = { os: "linux", arch: "amd64" };
const DARWIN = { os: "darwin", arch: "arm64" };

type VersionDoc = { archives: Record<string, { url: string; hashes: string[] }> };

async function readMeta(cacheDir: string, type: string, version: string, platform: string) {
  const env = JSON.parse(
    await Deno.readTextFile(
      join(cacheDir, "refs", H, "example", type, version, `archive_${platform}.json`),
    ),
  );
  return JSON.parse(env.body) as {
    sha256: string;
    size: number;
    h1: string;
    cachedAt: number;
    url: string;
  };
}

Deno.test("export writes the packed layout with index.json and <version>.json listing only what it exported", async () => {
  await using fake = await startFakeRegistry({ providers: TWO_PROVIDERS });
  await using dir = await tempDir();
  const cache = join(dir.path, "cache");
  {
    await using t = await makeTestApp(fake, cache);
    const report = await warm(t.app, {
      targets: [
        {
          provider: { hostname: H, namespace: "example", type: "alpha" },
          version: "1.1.0",
          source: "a",
        },
        { provider: { hostname: H, namespace: "example", type: "beta" }, source: "b" },
      ],
      platforms: [LINUX, DARWIN],
      concurrency: 4,
    });
    assertEquals(report.items.filter((i) => i.status === "fetched").length, 4);
  }
  const out = join(dir.path, "out");
  const report = await exportCache(cache, out);
  assertEquals([report.archives, report.providers, report.problems], [4, 2, []]);

  const alphaDir = join(out, H, "example", "alpha");
  assertEquals(await listDir(alphaDir), [
    "1.1.0.json",
    "index.json",
    "terraform-provider-alpha_1.1.0_darwin_arm64.zip",
    "terraform-provider-alpha_1.1.0_linux_amd64.zip",
  ]);
  // Only the exported version, although the upstream also lists 1.0.0.
  assertEquals(JSON.parse(await Deno.readTextFile(join(alphaDir, "index.json"))), {
    versions: { "1.1.0": {} },
  });
  const v = JSON.parse(await Deno.readTextFile(join(alphaDir, "1.1.0.json"))) as VersionDoc;
  assertEquals(Object.keys(v.archives).sort(), ["darwin_arm64", "linux_amd64"]);
  for (const platform of ["linux_amd64", "darwin_arm64"]) {
    const fa = fake.archive("alpha", "1.1.0", platform);
    const zip = join(alphaDir, fa.filename);
    assertEquals(await Deno.readFile(zip), fa.bytes, "byte-identical to upstream");
    assertEquals(v.archives[platform], {
      url: fa.filename,
      hashes: [await hashZipH1(zip), `zh:${fa.sha256}`],
    });
  }
  assertEquals(await listDir(join(out, H, "example", "beta")), [
    "2.3.4.json",
    "index.json",
    "terraform-provider-beta_2.3.4_darwin_arm64.zip",
    "terraform-provider-beta_2.3.4_linux_amd64.zip",
  ]);
  // No temp files left behind.
  assert((await listDir(alphaDir)).every((n) => !n.startsWith(".")));

  // A non-empty target is refused rather than half-merged.
  await assertRejects(
    () => exportCache(cache, out),
    /is not empty; export into a new or empty directory/,
  );
});

Deno.test("import checks zh: and h1:, records archives like downloads, and is idempotent", async () => {
  await using fake = await startFakeRegistry({ providers: TWO_PROVIDERS });
  await using dir = await tempDir();
  const cacheA = join(dir.path, "a");
  {
    await using t = await makeTestApp(fake, cacheA);
    await warm(t.app, {
      targets: [{
        provider: { hostname: H, namespace: "example", type: "alpha" },
        version: "1.0.0",
        source: "x",
      }],
      platforms: [LINUX, DARWIN, { os: "windows", arch: "amd64" }],
      concurrency: 2,
    });
  }
  const out = join(dir.path, "out");
  await exportCache(cacheA, out);
  const alphaOut = join(out, H, "example", "alpha");

  const cacheB = join(dir.path, "b");
  const config = await buildConfig({ cacheDir: cacheB, offline: true });
  let t0 = 5_000;
  const first = await importTree(config, out, { now: () => t0 });
  assertEquals(first.problems, []);
  assertEquals(first.items.map((i) => [platformString(i.platform), i.status, i.detail]).sort(), [
    ["darwin_arm64", "imported", "matched zh: and h1:"],
    ["linux_amd64", "imported", "matched zh: and h1:"],
    ["windows_amd64", "imported", "matched zh: and h1:"],
  ]);
  for (const platform of ["linux_amd64", "darwin_arm64", "windows_amd64"]) {
    const fa = fake.archive("alpha", "1.0.0", platform);
    const stored = join(cacheB, "packages", H, "example", "alpha", fa.filename);
    assertEquals(sha256Hex(await Deno.readFile(stored)), fa.sha256);
    assertEquals(await readMeta(cacheB, "alpha", "1.0.0", platform), {
      sha256: fa.sha256,
      size: fa.bytes.length,
      fp: fa.sha256, // under 128 KiB the fingerprint hashes the whole archive
      h1: await hashZipH1(stored),
      cachedAt: 5_000,
      url: `import:${join(alphaOut, fa.filename)}`,
    });
  }
  assertEquals(await tempLeftovers(cacheB), []);

  t0 = 9_000;
  const again = await importTree(config, out, { now: () => t0 });
  assertEquals(again.items.map((i) => i.status), ["cached", "cached", "cached"]);
  assertEquals((await readMeta(cacheB, "alpha", "1.0.0", "linux_amd64")).cachedAt, 5_000);

  // Tampering: a flipped byte fails zh:; with only h1: listed (as terraform
  // providers mirror writes), swapped zips fail h1:; unlisted and malformed
  // listings are refused; --trust-unlisted takes an unlisted zip as it is.
  const bad = join(dir.path, "bad", H, "example", "alpha");
  await Deno.mkdir(bad, { recursive: true });
  const lin = fake.archive("alpha", "1.0.0", "linux_amd64");
  const dar = fake.archive("alpha", "1.0.0", "darwin_arm64");
  const win = fake.archive("alpha", "1.0.0", "windows_amd64");
  const flipped = lin.bytes.slice();
  flipped[20] = flipped[20]! ^ 0xff;
  await Deno.writeFile(join(bad, lin.filename), flipped);
  await Deno.writeFile(join(bad, dar.filename), win.bytes); // darwin's name, windows' bytes
  await Deno.writeFile(join(bad, win.filename), win.bytes);
  await Deno.writeFile(join(bad, "terraform-provider-alpha_1.1.0_linux_amd64.zip"), lin.bytes);
  await Deno.writeFile(join(bad, "terraform-provider-alpha_2.0.0_linux_amd64.zip"), lin.bytes);
  await Deno.writeTextFile(join(bad, "2.0.0.json"), "{not json");
  const listed = JSON.parse(await Deno.readTextFile(join(alphaOut, "1.0.0.json"))) as VersionDoc;
  listed.archives.darwin_arm64!.hashes = listed.archives.darwin_arm64!.hashes.filter((h) =>
    h.startsWith("h1:")
  );
  delete listed.archives.windows_amd64;
  await Deno.writeTextFile(join(bad, "1.0.0.json"), JSON.stringify(listed));
  const cacheC = join(dir.path, "c");
  const configC = await buildConfig({ cacheDir: cacheC });
  const r = await importTree(configC, join(dir.path, "bad"));
  const byName = Object.fromEntries(
    r.items.map((i) => [`${i.version} ${platformString(i.platform)}`, i]),
  );
  assertEquals(byName["1.0.0 linux_amd64"]!.status, "refused");
  assertMatch(byName["1.0.0 linux_amd64"]!.detail, /is not the zh: that 1\.0\.0\.json lists/);
  assertEquals(byName["1.0.0 darwin_arm64"]!.status, "refused");
  assertMatch(
    byName["1.0.0 darwin_arm64"]!.detail,
    /contents hash to h1:.*, not the h1: that 1\.0\.0\.json lists/,
  );
  assertMatch(
    byName["1.0.0 windows_amd64"]!.detail,
    /lists no h1: or zh: hash for windows_amd64.*--trust-unlisted/,
  );
  assertMatch(byName["1.1.0 linux_amd64"]!.detail, /1\.1\.0\.json lists no h1: or zh: hash/);
  assertMatch(byName["2.0.0 linux_amd64"]!.detail, /2\.0\.0\.json is malformed/);
  assert(r.items.every((i) => i.status === "refused"));
  assertEquals(await listDir(join(cacheC, "packages", H, "example", "alpha")), []);

  const trusted = await importTree(configC, join(dir.path, "bad"), { trustUnlisted: true });
  const tb = Object.fromEntries(
    trusted.items.map((i) => [`${i.version} ${platformString(i.platform)}`, i]),
  );
  assertEquals(tb["1.0.0 windows_amd64"]!.status, "imported");
  assertEquals(tb["1.0.0 windows_amd64"]!.detail, "trusted without a listed hash");
  assertEquals(tb["1.0.0 linux_amd64"]!.status, "refused", "listed hashes still bind");
  assertEquals(tb["1.0.0 darwin_arm64"]!.status, "refused");
  assertEquals(tb["2.0.0 linux_amd64"]!.status, "refused", "a malformed listing is not 'unlisted'");
});

Deno.test("import refuses registries the config does not serve and layouts it cannot read", async () => {
  await using dir = await tempDir();
  const src = join(dir.path, "src");
  await Deno.mkdir(join(src, "tfe.example.com", "acme", "thing"), { recursive: true });
  await Deno.writeFile(
    join(src, "tfe.example.com", "acme", "thing", "terraform-provider-thing_1.0.0_linux_amd64.zip"),
    new Uint8Array([1, 2, 3]),
  );
  await Deno.mkdir(join(src, H, "acme", "thing", "1.0.0", "linux_amd64"), { recursive: true });
  const r = await importTree(await buildConfig({ cacheDir: join(dir.path, "c") }), src, {
    trustUnlisted: true,
  });
  assertMatch(r.items[0]!.detail, /registry tfe\.example\.com is not in "upstreams"/);
  assertMatch(r.problems.join("\n"), /unpacked layout is not supported/);
});

Deno.test("end to end: warm, export, carry, import into an empty cache, serve offline over HTTPS to terraform init", async () => {
  await using fake = await startFakeRegistry({ providers: TWO_PROVIDERS });
  await using dir = await tempDir();
  const here = currentPlatform();
  await Deno.mkdir(join(dir.path, "connected"));
  const connected = await writeConfig(join(dir.path, "connected"), {
    cacheDir: "cache",
    upstreams: { [H]: { url: fake.registryUrl } },
    egressAllow: fake.egressAllow,
  });
  const warmRun = await runCli([
    "warm",
    "-c",
    connected,
    "-p",
    platformString(here),
    "-p",
    "darwin_arm64",
    "example/alpha@1.1.0",
    "example/beta@2.3.4",
  ]);
  assertEquals(warmRun.code, 0, warmRun.stderr);
  const carried = join(dir.path, "usb-stick");
  const exp = await runCli(["export", "-c", connected, carried]);
  assertEquals(exp.code, 0, exp.stderr);
  assertMatch(exp.stdout, /export: 4 archive\(s\) of 2 provider\(s\)/);
  await fake.stop(); // from here on there is no upstream at all

  await Deno.mkdir(join(dir.path, "airgapped"));
  const airgapped = await writeConfig(join(dir.path, "airgapped"), {
    cacheDir: "cache",
    offline: true,
    listen: "127.0.0.1:0",
    upstreams: { [H]: {} },
  });
  const imp = await runCli(["import", "-c", airgapped, carried]);
  assertEquals(imp.code, 0, imp.stderr);
  assertMatch(imp.stdout, /4 imported .*, 0 already cached, 0 refused/);
  const tls = await runCli(["tls", "init", "-c", airgapped]);
  assertEquals(tls.code, 0, tls.stderr);
  const tlsDir = join(dir.path, "airgapped", "cache", "tls");
  await Deno.writeTextFile(
    airgapped,
    JSON.stringify({
      cacheDir: "cache",
      offline: true,
      listen: "127.0.0.1:0",
      upstreams: { [H]: {} },
      tls: { cert: join(tlsDir, "server.pem"), key: join(tlsDir, "server.key") },
    }),
  );

  const config = await loadConfig(airgapped);
  const log = memoryLogger();
  const app = await createApp(config, {
    log,
    fetch: () => Promise.reject(new Error("no network")),
  });
  const server = serveApp(app);
  try {
    const client = Deno.createHttpClient({
      caCerts: [await Deno.readTextFile(join(tlsDir, "ca.pem"))],
    });
    try {
      const base = server.url;
      assertMatch(base, /^https:\/\/127\.0\.0\.1:\d+\/$/);
      const idx = await fetch(`${base}${H}/example/alpha/index.json`, { client });
      assertEquals(await jsonOf(idx), { versions: { "1.1.0": {} } });
      const v = await jsonOf(
        await fetch(`${base}${H}/example/alpha/1.1.0.json`, { client }),
      ) as VersionDoc;
      const fa = fake.archive("alpha", "1.1.0", "darwin_arm64");
      assertEquals(v.archives.darwin_arm64!.hashes[1], `zh:${fa.sha256}`);
      const zip = await fetch(`${base}${H}/example/alpha/${fa.filename}`, { client });
      assertEquals(new Uint8Array(await zip.arrayBuffer()), fa.bytes);
    } finally {
      client.close();
    }

    const tf = await terraformOrSkip("terraform init against the imported, offline mirror");
    if (tf) {
      const work = join(dir.path, "work");
      await Deno.mkdir(work);
      await Deno.writeTextFile(
        join(work, "main.tf"),
        requiredProviders([
          { source: "example/alpha", version: "1.1.0" },
          { source: "example/beta", version: "2.3.4" },
        ]),
      );
      const init = await runTerraform(
        tf,
        work,
        ["init", "-input=false"],
        `provider_installation {\n  network_mirror {\n    url = "${server.url}"\n  }\n}\n`,
        { SSL_CERT_FILE: join(tlsDir, "ca.pem") },
      );
      assertEquals(init.code, 0, init.output);
      assertMatch(init.output, /Installed example\/alpha v1\.1\.0/);
      const lock = await Deno.readTextFile(join(work, ".terraform.lock.hcl"));
      for (const [type, version] of [["alpha", "1.1.0"], ["beta", "2.3.4"]] as const) {
        const meta = await readMeta(
          join(dir.path, "airgapped", "cache"),
          type,
          version,
          platformString(here),
        );
        assertEquals(lockedHashes(lock, `${H}/example/${type}`), [meta.h1]);
      }
    }
  } finally {
    await server.shutdown(2000);
  }
  assert(
    !log.records.some((r) => r.msg === "request" && r.status !== 200),
    "every request was answered from the imported cache",
  );
});

Deno.test("the export directory works as a filesystem_mirror for terraform init", async () => {
  await using fake = await startFakeRegistry({ providers: TWO_PROVIDERS });
  await using dir = await tempDir();
  const cache = join(dir.path, "cache");
  {
    await using t = await makeTestApp(fake, cache);
    const r = await warm(t.app, {
      targets: [{
        provider: { hostname: H, namespace: "example", type: "beta" },
        version: "2.3.4",
        source: "x",
      }],
      platforms: [currentPlatform()],
      concurrency: 1,
    });
    assertEquals(r.items.map((i) => i.status), ["fetched"]);
  }
  const out = join(dir.path, "mirror");
  await exportCache(cache, out);
  const tf = await terraformOrSkip("terraform init with the export as filesystem_mirror");
  if (!tf) return;
  const work = join(dir.path, "work");
  await Deno.mkdir(work);
  await Deno.writeTextFile(
    join(work, "main.tf"),
    requiredProviders([{ source: "example/beta", version: "2.3.4" }]),
  );
  const init = await runTerraform(
    tf,
    work,
    ["init", "-input=false"],
    `provider_installation {\n  filesystem_mirror {\n    path = "${out}"\n  }\n}\n`,
  );
  assertEquals(init.code, 0, init.output);
  const fa = fake.archive("beta", "2.3.4", platformString(currentPlatform()));
  const lock = await Deno.readTextFile(join(work, ".terraform.lock.hcl"));
  assertEquals(lockedHashes(lock, `${H}/example/beta`), [
    await hashZipH1(join(out, H, "example", "beta", fa.filename)),
  ]);
});

Deno.test("import takes the plain output of terraform providers mirror (h1: only) and checks it", async () => {
  const tf = await terraformOrSkip("terraform providers mirror → import");
  if (!tf) return;
  await using fake = await startFakeRegistry({ providers: TWO_PROVIDERS });
  await using dir = await tempDir();
  // terraform providers mirror talks the registry protocol; let it reach the
  // fake registry through a connected Repoxy (plain http works for host blocks).
  await using t = await makeTestApp(fake, join(dir.path, "connected"), { listen: "127.0.0.1:0" });
  const server = serveApp(t.app);
  const work = join(dir.path, "work");
  const out = join(dir.path, "tf-mirror");
  try {
    await Deno.mkdir(work);
    await Deno.writeTextFile(
      join(work, "main.tf"),
      requiredProviders([{ source: "example/alpha", version: "1.0.0" }]),
    );
    const mirror = await runTerraform(
      tf,
      work,
      ["providers", "mirror", "-platform=linux_amd64", "-platform=windows_amd64", out],
      `host "${H}" {\n  services = {\n    "providers.v1" = "${server.url}v1/providers/${H}/"\n  }\n}\n`,
    );
    assertEquals(mirror.code, 0, mirror.output);
  } finally {
    await server.shutdown(2000);
  }
  const tfDoc = JSON.parse(
    await Deno.readTextFile(join(out, H, "example", "alpha", "1.0.0.json")),
  ) as VersionDoc;
  assert(tfDoc.archives.linux_amd64!.hashes.every((h) => h.startsWith("h1:")), "TF lists h1: only");

  const cache = join(dir.path, "airgapped");
  const r = await importTree(await buildConfig({ cacheDir: cache }), out);
  assertEquals(r.problems, []);
  assertEquals(r.items.map((i) => [platformString(i.platform), i.status, i.detail]).sort(), [
    ["linux_amd64", "imported", "matched h1:"],
    ["windows_amd64", "imported", "matched h1:"],
  ]);
  for (const platform of ["linux_amd64", "windows_amd64"]) {
    const meta = await readMeta(cache, "alpha", "1.0.0", platform);
    assertEquals(meta.sha256, fake.archive("alpha", "1.0.0", platform).sha256);
    assertEquals([meta.h1], tfDoc.archives[platform]!.hashes);
  }
});

Deno.test("a running offline server serves what import adds while it runs", async () => {
  await using fake = await startFakeRegistry({ providers: TWO_PROVIDERS });
  await using dir = await tempDir();
  const connected = join(dir.path, "connected");
  {
    await using t = await makeTestApp(fake, connected);
    await warm(t.app, {
      targets: [{ provider: { hostname: H, namespace: "example", type: "beta" }, source: "x" }],
      platforms: [LINUX],
      concurrency: 1,
    });
  }
  const out = join(dir.path, "out");
  await exportCache(connected, out);
  const fa = fake.archive("beta", "2.3.4", "linux_amd64");

  const airgapped = join(dir.path, "airgapped");
  await using server = await makeTestApp(undefined, airgapped, {
    offline: true,
    upstreams: { [H]: {} },
  });
  // Before the import: nothing, and the server remembers that it had nothing.
  for (const path of ["index.json", "2.3.4.json", fa.filename]) {
    const res = await server.get(`/${H}/example/beta/${path}`);
    assertEquals(res.status, 404, path);
    await res.body?.cancel();
  }
  const r = await importTree(server.config, out);
  assertEquals(r.items.map((i) => i.status), ["imported"]);
  assertEquals(await jsonOf(await server.get(`/${H}/example/beta/index.json`)), {
    versions: { "2.3.4": {} },
  });
  const v = await jsonOf(await server.get(`/${H}/example/beta/2.3.4.json`)) as VersionDoc;
  assertEquals(v, {
    archives: {
      linux_amd64: {
        url: fa.filename,
        hashes: [await hashZipH1(join(out, H, "example", "beta", fa.filename)), `zh:${fa.sha256}`],
      },
    },
  });
  const zip = await server.get(`/${H}/example/beta/${fa.filename}`);
  assertEquals(zip.headers.get("x-repoxy-cache"), "hit");
  assertEquals(new Uint8Array(await zip.arrayBuffer()), fa.bytes);
  assertEquals(server.upstream.length, 0);
});
