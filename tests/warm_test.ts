/**
 * `repoxy warm` against the fake registry: from lock files and addresses,
 * idempotent, bounded, failures named, then served offline.
 */
import { hashZipH1 } from "../lib/integrity/dirhash.ts";
import { warm, warmCommand, type WarmTarget } from "../lib/commands/warm.ts";
import { Progress } from "../lib/commands/cli.ts";
import { assert, assertEquals, assertMatch } from "../lib/deps/assert.ts";
import { join } from "../lib/deps/path.ts";
import { startFakeRegistry } from "./fake_registry.ts";
import { captureIo, runCli, testContext, writeFakeConfig } from "./_cli.ts";
import {
  bytesOf,
  jsonOf,
  makeTestApp,
  mirrorFixture,
  sha256Hex,
  tempDir,
  TWO_PROVIDERS,
} from "./_helpers.ts";

const H = "registry.terraform.io";

function lockFileFor(
  entries: Array<{ type: string; version: string; hashes: string[] }>,
): string {
  return [
    '# This file is maintained automatically by "terraform init".',
    "# Manual edits may be lost in future updates.",
    "",
    ...entries.flatMap((e) => [
      `provider "${H}/example/${e.type}" {`,
      `  version     = "${e.version}"`,
      `  constraints = "${e.version}"`,
      `  hashes = [`,
      ...e.hashes.map((h) => `    "${h}",`),
      `  ]`,
      `}`,
      "",
    ]),
  ].join("\n");
}

Deno.test("repoxy warm fetches what a lock file and an address name, then skips them on a re-run", async () => {
  await using fake = await startFakeRegistry({ providers: TWO_PROVIDERS });
  await using dir = await tempDir();
  const { cacheDir, config } = await writeFakeConfig(dir.path, fake);
  const lockPath = join(dir.path, ".terraform.lock.hcl");
  await Deno.writeTextFile(
    lockPath,
    lockFileFor([{
      type: "alpha",
      version: "1.0.0",
      hashes: fake.archives.filter((a) => a.type === "alpha" && a.version === "1.0.0").map((a) =>
        `zh:${a.sha256}`
      ),
    }]),
  );

  const run = await runCli([
    "warm",
    "--config",
    config,
    "--platform",
    "linux_amd64",
    "-p",
    "darwin_arm64",
    dir.path, // a directory: its .terraform.lock.hcl
    "example/beta", // newest release of the default upstream
  ]);
  assertEquals(run.code, 0, run.stderr);
  assertMatch(run.stdout, /4 fetched .*, 0 already cached, 0 failed/);
  assertEquals(run.stdout.trim().split("\n").length, 1, "one summary line when not on a terminal");

  const expected = [
    ["alpha", "1.0.0", "linux_amd64"],
    ["alpha", "1.0.0", "darwin_arm64"],
    ["beta", "2.3.4", "linux_amd64"],
    ["beta", "2.3.4", "darwin_arm64"],
  ] as const;
  for (const [type, version, platform] of expected) {
    const fa = fake.archive(type, version, platform);
    const path = join(cacheDir, "packages", H, "example", type, fa.filename);
    assertEquals(sha256Hex(await Deno.readFile(path)), fa.sha256);
    const envelope = JSON.parse(
      await Deno.readTextFile(
        join(cacheDir, "refs", H, "example", type, version, `archive_${platform}.json`),
      ),
    );
    const meta = JSON.parse(envelope.body);
    assertEquals(meta.sha256, fa.sha256);
    assertEquals(meta.h1, await hashZipH1(path));
  }
  // Nothing else was fetched: not alpha 1.1.0, not other platforms.
  const zipGets = fake.count((r) =>
    r.server === "release" && r.path.startsWith("/files/") && r.path.endsWith(".zip")
  );
  assertEquals(zipGets, 4);
  assertEquals((await Array.fromAsync(Deno.readDir(join(cacheDir, "tmp")))).length, 0);

  const again = await runCli([
    "warm",
    "-c",
    config,
    "-p",
    "linux_amd64",
    "-p",
    "darwin_arm64",
    lockPath,
    "example/beta@2.3.4",
  ]);
  assertEquals(again.code, 0, again.stderr);
  assertMatch(again.stdout, /0 fetched .*, 4 already cached, 0 failed/);
  assertEquals(
    fake.count((r) => r.server === "release" && r.path.endsWith(".zip")),
    zipGets * 2, // the first run's redirect hops + file GETs, nothing more
  );
});

Deno.test("repoxy warm names every failure, keeps the rest, and exits 1", async () => {
  await using fake = await startFakeRegistry({
    providers: TWO_PROVIDERS,
    intercept: (req, server) => {
      // The release host corrupts one archive.
      if (
        server === "release" &&
        req.url.endsWith(
          "/files/example/alpha/1.1.0/terraform-provider-alpha_1.1.0_linux_amd64.zip",
        )
      ) {
        return new Response(new Uint8Array(300).fill(1));
      }
    },
  });
  await using dir = await tempDir();
  const { cacheDir, config } = await writeFakeConfig(dir.path, fake);
  const lockPath = join(dir.path, "other.lock.hcl");
  // A lock file pinning other bytes for beta (a registry-made lock: zh: hashes).
  await Deno.writeTextFile(
    lockPath,
    lockFileFor([{ type: "beta", version: "2.3.4", hashes: [`zh:${"0".repeat(64)}`] }]),
  );
  const io = captureIo();
  const code = await warmCommand.run(
    [
      "-c",
      config,
      "-p",
      "linux_amd64",
      "-p",
      "windows_amd64",
      "example/alpha@1.1.0",
      "example/nope",
      lockPath,
    ],
    testContext(io),
  );
  assertEquals(code, 1);
  const err = io.errLines.join("\n");
  assertMatch(err, /FAILED registry\.terraform\.io\/example\/nope \(example\/nope\): 404/);
  assertMatch(
    err,
    /FAILED registry\.terraform\.io\/example\/alpha 1\.1\.0 linux_amd64: download failed: .*does not match the upstream checksum/,
  );
  assertMatch(
    err,
    /FAILED registry\.terraform\.io\/example\/beta 2\.3\.4 windows_amd64: not published for windows_amd64 \(the upstream offers darwin_arm64, linux_amd64, linux_arm64\)/,
  );
  assertMatch(
    err,
    /FAILED registry\.terraform\.io\/example\/beta 2\.3\.4 linux_amd64: does not match any hash that .*other\.lock\.hcl:4 pins/,
  );
  assertEquals(io.outLines.length, 1);
  assertMatch(io.outLines[0]!, /1 fetched .* 4 failed/);
  // alpha windows_amd64 was fine and is cached; the corrupt one is not.
  const alphaDir = join(cacheDir, "packages", H, "example", "alpha");
  assertEquals(
    sha256Hex(
      await Deno.readFile(join(alphaDir, "terraform-provider-alpha_1.1.0_windows_amd64.zip")),
    ),
    fake.archive("alpha", "1.1.0", "windows_amd64").sha256,
  );
  await assertMissing(join(alphaDir, "terraform-provider-alpha_1.1.0_linux_amd64.zip"));
});

async function assertMissing(path: string) {
  try {
    await Deno.lstat(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return;
    throw e;
  }
  throw new Error(`${path} should not exist`);
}

Deno.test("warm keeps at most --concurrency archive downloads in flight and draws a progress bar on a terminal", async () => {
  let inFlight = 0;
  let peak = 0;
  await using t = await mirrorFixture({
    providers: TWO_PROVIDERS,
    registry: {
      redirectDownloads: false,
      intercept: async (req, server) => {
        if (server !== "release" || !req.url.endsWith(".zip")) return undefined;
        inFlight++;
        peak = Math.max(peak, inFlight);
        await new Promise((r) => setTimeout(r, 40));
        inFlight--;
        return undefined; // then the normal answer
      },
    },
  });
  const io = captureIo(true);
  const targets: WarmTarget[] = [
    {
      provider: { hostname: H, namespace: "example", type: "alpha" },
      version: "1.0.0",
      source: "a",
    },
    {
      provider: { hostname: H, namespace: "example", type: "alpha" },
      version: "1.1.0",
      source: "b",
    },
  ];
  const platforms = [{ os: "linux", arch: "amd64" }, { os: "darwin", arch: "arm64" }, {
    os: "windows",
    arch: "amd64",
  }];
  const report = await warm(t.app, {
    targets,
    platforms,
    concurrency: 2,
    progress: new Progress(io),
  });
  assertEquals(report.failures, []);
  assertEquals(report.items.map((i) => i.status), Array(6).fill("fetched"));
  assertEquals(peak, 2, "six archives, two at a time");
  const drawn = io.ttyWrites.join("");
  assertMatch(drawn, /\[#+\.*\] \d\/6 archives/);
  assertMatch(drawn, /\[#{24}\] 6\/6 archives/);
});

Deno.test("after warm, an offline mirror answers index.json, {version}.json and the archive without the upstream", async () => {
  await using fake = await startFakeRegistry({ providers: TWO_PROVIDERS });
  await using dir = await tempDir();
  {
    await using t = await makeTestApp(fake, dir.path);
    const report = await warm(t.app, {
      targets: [{ provider: { hostname: H, namespace: "example", type: "beta" }, source: "x" }],
      platforms: [{ os: "linux", arch: "arm64" }],
      concurrency: 4,
    });
    assertEquals(report.items.map((i) => [i.version, i.status]), [["2.3.4", "fetched"]]);
  }
  await fake.stop();
  await using off = await makeTestApp(undefined, dir.path, {
    offline: true,
    upstreams: { [H]: { url: fake.registryUrl } },
  });
  const fa = fake.archive("beta", "2.3.4", "linux_arm64");
  assertEquals(await jsonOf(await off.get(`/${H}/example/beta/index.json`)), {
    versions: { "2.3.4": {} },
  });
  const v = await jsonOf(await off.get(`/${H}/example/beta/2.3.4.json`)) as {
    archives: Record<string, { url: string; hashes: string[] }>;
  };
  const stored = join(dir.path, "packages", H, "example", "beta", fa.filename);
  assertEquals(v.archives.linux_arm64!.hashes, [await hashZipH1(stored), `zh:${fa.sha256}`]);
  const res = await off.get(`/${H}/example/beta/${fa.filename}`);
  assertEquals(res.status, 200);
  assertEquals(res.headers.get("x-repoxy-cache"), "hit");
  assertEquals(await bytesOf(res), fa.bytes);
  // The registry protocol too, with the publisher's signed checksums.
  const dl = await jsonOf(
    await off.get(`/v1/providers/example/beta/2.3.4/download/linux/arm64`),
  ) as {
    shasum: string;
    download_url: string;
  };
  assertEquals(dl.shasum, fa.sha256);
  assertEquals(dl.download_url, `/${H}/example/beta/${fa.filename}`);
  const sums = await off.get(`/v1/providers/example/beta/2.3.4/SHA256SUMS`);
  assertEquals(await bytesOf(sums), fake.sums.get("example/beta/2.3.4"));
  const sig = await off.get(`/v1/providers/example/beta/2.3.4/SHA256SUMS.sig`);
  assertEquals(await bytesOf(sig), fake.signatures.get("example/beta/2.3.4"));
  assert(off.upstream.length === 0);
});

Deno.test("warm and the other commands work on a mirror with client auth (they are the operator)", async () => {
  await using fake = await startFakeRegistry({ providers: TWO_PROVIDERS });
  await using dir = await tempDir();
  const { cacheDir, config } = await writeFakeConfig(dir.path, fake, {
    auth: { tokens: [{ name: "ci", sha256: "ab".repeat(32) }] },
  });
  const run = await runCli(["warm", "-c", config, "-p", "linux_amd64", "example/beta@2.3.4"]);
  assertEquals(run.code, 0, run.stderr);
  assertMatch(run.stdout, /1 fetched .*, 0 already cached, 0 failed/);
  const fa = fake.archive("beta", "2.3.4", "linux_amd64");
  const path = join(cacheDir, "packages", H, "example", "beta", fa.filename);
  assertEquals(sha256Hex(await Deno.readFile(path)), fa.sha256);
});
