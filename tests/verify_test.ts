/**
 * `repoxy verify`: flipped bytes are caught, quarantined, and fetched again.
 */
import { verifyCache } from "../lib/commands/verify.ts";
import { assert, assertEquals, assertMatch } from "../lib/deps/assert.ts";
import { join } from "../lib/deps/path.ts";
import { startFakeRegistry } from "./fake_registry.ts";
import { runCli, writeFakeConfig } from "./_cli.ts";
import {
  bytesOf,
  exists,
  listDir,
  makeTestApp,
  mirrorFixture,
  sha256Hex,
  tempDir,
  TWO_PROVIDERS,
} from "./_helpers.ts";

const H = "registry.terraform.io";

Deno.test("verify catches a flipped byte, quarantines the file, and the next request downloads good bytes", async () => {
  await using fake = await startFakeRegistry({ providers: TWO_PROVIDERS });
  await using dir = await tempDir();
  const { cacheDir, config } = await writeFakeConfig(dir.path, fake);
  // This app plays the server that keeps running while verify works.
  await using t = await makeTestApp(fake, cacheDir, {
    upstreams: { [H]: { url: fake.registryUrl } },
  });
  const alpha = fake.archive("alpha", "1.1.0", "linux_amd64");
  const beta = fake.archive("beta", "2.3.4", "linux_arm64");
  for (const a of [alpha, beta]) {
    await bytesOf(await t.get(`/${H}/example/${a.type}/${a.filename}`));
  }
  await t.app.settle();

  const clean = await runCli(["verify", "-c", config]);
  assertEquals(clean.code, 0, clean.stderr);
  assertMatch(clean.stdout, /verify: 2 archive\(s\) .* checked: 2 ok, 0 quarantined/);

  const alphaPath = join(cacheDir, "packages", H, "example", "alpha", alpha.filename);
  const bytes = await Deno.readFile(alphaPath);
  bytes[bytes.length >> 1] = bytes[bytes.length >> 1]! ^ 0x01;
  await Deno.writeFile(alphaPath, bytes);

  const run = await runCli(["verify", "-c", config]);
  assertEquals(run.code, 1, run.stderr);
  assertMatch(
    run.stderr,
    new RegExp(
      `MISMATCH ${H}/example/alpha 1\\.1\\.0 linux_amd64: sha256 is [0-9a-f]{64}, recorded ${alpha.sha256}`,
    ),
  );
  assertMatch(run.stdout, /2 archive\(s\) .* checked: 1 ok, 1 quarantined/);

  assertEquals(await exists(alphaPath), false);
  const qdir = join(cacheDir, "quarantine", H, "example", "alpha");
  const quarantined = await listDir(qdir);
  assertEquals(quarantined.length, 2);
  const [qzip, qnote] = [
    quarantined.find((n) => !n.endsWith(".json"))!,
    quarantined.find((n) => n.endsWith(".json"))!,
  ];
  assert(qzip.startsWith(alpha.filename + "."));
  assertEquals(
    await Deno.readFile(join(qdir, qzip)),
    bytes,
    "the bad bytes are kept for inspection",
  );
  const note = JSON.parse(await Deno.readTextFile(join(qdir, qnote)));
  assertEquals(note.recorded.sha256, alpha.sha256);
  assertEquals(
    await exists(
      join(cacheDir, "refs", H, "example", "alpha", "1.1.0", "archive_linux_amd64.json"),
    ),
    false,
    "the record is dropped",
  );
  assert(
    await exists(join(cacheDir, "packages", H, "example", "beta", beta.filename)),
    "good ones stay",
  );

  // The running server fetches it again, correctly, and it verifies clean.
  const again = await t.get(`/${H}/example/alpha/${alpha.filename}`);
  assertEquals(again.headers.get("x-repoxy-cache"), "miss");
  assertEquals(await bytesOf(again), alpha.bytes);
  await t.app.settle();
  assertEquals(sha256Hex(await Deno.readFile(alphaPath)), alpha.sha256);
  assertEquals((await runCli(["verify", "-c", config])).code, 0);
});

Deno.test("verify compares the recorded h1 and leaves access times (LRU order) alone", async () => {
  await using t = await mirrorFixture({ providers: TWO_PROVIDERS });
  const { fake, dir } = t;
  const a = fake.archive("alpha", "1.0.0", "darwin_arm64");
  const b = fake.archive("alpha", "1.0.0", "linux_amd64");
  for (const x of [a, b]) await bytesOf(await t.get(`/${H}/example/alpha/${x.filename}`));
  await t.app.settle();
  const pathA = join(dir.path, "packages", H, "example", "alpha", a.filename);
  const pathB = join(dir.path, "packages", H, "example", "alpha", b.filename);
  const old = new Date(Date.UTC(2020, 0, 1));
  const mtimeB = (await Deno.stat(pathB)).mtime!;
  await Deno.utime(pathB, old, mtimeB);

  // Same bytes, wrong recorded h1: clients would be told a hash the zip does not have.
  const metaFile = join(
    dir.path,
    "refs",
    H,
    "example",
    "alpha",
    "1.0.0",
    "archive_darwin_arm64.json",
  );
  const env = JSON.parse(await Deno.readTextFile(metaFile));
  const meta = JSON.parse(env.body);
  assertMatch(meta.h1, /^h1:/);
  meta.h1 = "h1:" + "A".repeat(43) + "=";
  env.body = JSON.stringify(meta);
  await Deno.writeTextFile(metaFile, JSON.stringify(env));

  const r = await verifyCache(dir.path);
  assertEquals(r.checked, 2);
  assertEquals(r.mismatches.length, 1);
  assertEquals(r.mismatches[0]!.file.path, pathA);
  assertMatch(r.mismatches[0]!.reason, /contents hash to h1:.*, recorded h1:AAAA/);
  const st = await Deno.stat(pathB);
  assertEquals(st.atime?.getTime(), old.getTime(), "reading for verify is not a use");
  assertEquals(st.mtime?.getTime(), mtimeB.getTime());
});
