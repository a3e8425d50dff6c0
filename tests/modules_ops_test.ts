/**
 * Modules in the maintenance commands: `warm` with module addresses and a
 * `modules.json`, `verify` re-hashing module archives, `export` → `import`
 * carrying them across an air gap (an offline mirror then serves them), and
 * `import` refusing a tampered or hostile module archive.
 */
import { assert, assertEquals, assertMatch, assertRejects } from "../lib/deps/assert.ts";
import { join } from "../lib/deps/path.ts";
import { warmCommand } from "../lib/commands/warm.ts";
import { verifyCommand } from "../lib/commands/verify.ts";
import { exportCache } from "../lib/commands/export.ts";
import { importTree } from "../lib/commands/import.ts";
import { buildConfig } from "../lib/config/config.ts";
import { createHash } from "../lib/deps/crypto.ts";
import { findGitBackend, serveRepo } from "./_git_server.ts";
import { makeTarGz, startFakeModuleRegistry } from "./fake_module_registry.ts";
import { captureIo, testContext, writeConfig } from "./_cli.ts";
import { bytesOf, makeTestApp, sha256Hex, tempDir } from "./_helpers.ts";

const GIT = await findGitBackend();
if (!GIT) {
  // deno-lint-ignore no-console
  console.log("SKIP: modules_ops_test: git http-backend is not installed");
}
const H = "registry.terraform.io";

Deno.test({
  name:
    "warm takes module addresses and modules.json; verify re-hashes; export → import → offline serves them",
  ignore: !GIT,
  async fn() {
    await using dir = await tempDir();
    await using git = await serveRepo(dir.path, "net", { "main.tf": "# net\n" }, "v1.2.0");
    const { commit } = git;
    await using reg = await startFakeModuleRegistry();
    reg.archives.set("s.tgz", await makeTarGz([{ name: "main.tf", content: "# store\n" }]));
    reg.modules.set("example/net/aws", new Map([["1.2.0", `git::${git.url}net.git?ref=v1.2.0`]]));
    reg.modules.set("example/store/aws", new Map([["0.1.0", `${reg.url}archives/s.tgz`]]));
    const cacheDir = join(dir.path, "cache");
    const config = await writeConfig(dir.path, {
      cacheDir,
      upstreams: { [H]: { url: reg.url } },
      egressAllow: [new URL(git.url).host],
    });
    const modulesJson = join(dir.path, "modules.json");
    await Deno.writeTextFile(
      modulesJson,
      JSON.stringify({
        Modules: [
          { Key: "", Source: "", Dir: "." },
          { Key: "store", Source: `${H}/example/store/aws`, Version: "0.1.0", Dir: "x" },
          { Key: "local", Source: "./local", Dir: "local" },
        ],
      }),
    );
    const io = captureIo();
    const code = await warmCommand.run(
      ["-c", config, `${H}/example/net/aws@1.2.0`, modulesJson],
      testContext(io),
    );
    assertEquals(code, 0, io.errLines.join("\n"));
    assertMatch(io.outLines.join("\n"), /2 module version\(s\): 2 fetched/);
    const netKey = join(cacheDir, "modules", H, "example/net/aws/1.2.0");
    assertEquals(JSON.parse(await Deno.readTextFile(`${netKey}.json`)).commit, commit);
    const netBytes = await Deno.readFile(`${netKey}.tar.gz`);

    // Again: nothing fetched.
    const io2 = captureIo();
    await warmCommand.run(
      ["-c", config, `${H}/example/net/aws@1.2.0`, modulesJson],
      testContext(io2),
    );
    assertMatch(io2.outLines.join("\n"), /0 fetched, 2 already cached/);
    assertEquals(git.fetches.length, 1);

    // export → import into a fresh cache → an offline mirror serves both.
    const tree = join(dir.path, "export");
    const ex = await exportCache(cacheDir, tree);
    assertEquals(ex.modules, 2);
    assertEquals(ex.problems, []);
    // A copy that fails half-way (the stored archive grew past its record) leaves nothing
    // under the archive's name in the tree, and no temp file (it used to leave the file it
    // had started).
    const grown = join(dir.path, "grown.tar.gz");
    await Deno.copyFile(`${netKey}.tar.gz`, grown);
    await Deno.writeFile(`${netKey}.tar.gz`, new Uint8Array(1024), { append: true });
    const tree2 = join(dir.path, "export2");
    await assertRejects(() => exportCache(cacheDir, tree2), /over the limit/);
    const netDir = join(tree2, ".repoxy", "modules", H, "example", "net", "aws");
    const names: string[] = [];
    for await (const e of Deno.readDir(netDir)) names.push(e.name);
    assertEquals(names.filter((n) => n.startsWith("1.2.0.tar.gz") || n.includes(".tmp-")), []);
    await Deno.rename(grown, `${netKey}.tar.gz`);
    const farCache = join(dir.path, "far");
    const farConfig = await buildConfig({
      cacheDir: farCache,
      upstreams: { [H]: { url: "http://127.0.0.1:9/" } },
      offline: true,
    });
    const im = await importTree(farConfig, tree);
    assertEquals(im.modules, { imported: 2, cached: 0, refused: [] });
    const t = await makeTestApp(undefined, farCache, {
      upstreams: { [H]: { url: "http://127.0.0.1:9/" } },
      offline: true,
    });
    try {
      const base = `/v1/modules/${H}/example/net/aws`;
      const v = await t.get(`${base}/versions`);
      assertEquals(v.status, 200);
      assertMatch(new TextDecoder().decode(await bytesOf(v)), /1\.2\.0/);
      const d = await t.get(`${base}/1.2.0/download`);
      assertEquals(d.status, 204);
      assertEquals(await bytesOf(await t.get(`${base}/1.2.0/module.tar.gz`)), netBytes);
      // The status page and the metrics list them.
      const page = new TextDecoder().decode(await bytesOf(await t.get("/")));
      assert(page.includes(`${H}/example/store/aws@0.1.0`), "status page lists the module");
      const metrics = new TextDecoder().decode(await bytesOf(await t.get("/-/metrics")));
      assertMatch(metrics, /^repoxy_modules_cached 2$/m);
    } finally {
      await t.app.close();
    }

    // verify: a flipped byte is found, the record dropped, the archive quarantined.
    const bytes = await Deno.readFile(`${netKey}.tar.gz`);
    bytes[bytes.length - 3]! ^= 0xff;
    await Deno.writeFile(`${netKey}.tar.gz`, bytes);
    const io3 = captureIo();
    assertEquals(await verifyCommand.run(["-c", config], testContext(io3)), 1);
    assertMatch(
      io3.errLines.join("\n"),
      /MISMATCH module registry\.terraform\.io\/example\/net\/aws@1\.2\.0: sha256/,
    );
    assertMatch(io3.outLines.join("\n"), /2 module archive\(s\) .* 1 ok, 1 quarantined/);
    assert(!await Deno.stat(`${netKey}.json`).then(() => true, () => false), "record dropped");
    assert(!await Deno.stat(`${netKey}.tar.gz`).then(() => true, () => false), "archive moved");
  },
});

Deno.test({
  name:
    "import refuses a module archive whose bytes differ from its record, or that escapes its directory",
  async fn() {
    await using dir = await tempDir();
    const tree = join(dir.path, "tree");
    const side = join(tree, ".repoxy/modules", H, "evil/m/aws");
    await Deno.mkdir(side, { recursive: true });
    const write = async (version: string, tgz: Uint8Array, sha?: string) => {
      await Deno.writeFile(join(side, `${version}.tar.gz`), tgz);
      await Deno.writeTextFile(
        join(side, `${version}.json`),
        JSON.stringify({
          sha256: sha ?? createHash("sha256").update(tgz).digest("hex"),
          size: tgz.length,
          source: "https://x/y.tgz",
          subdir: "",
          fetchedAt: 1,
        }),
      );
    };
    await write("1.0.0", await makeTarGz([{ name: "../../escape.tf", content: "x" }]));
    await write("1.0.1", await makeTarGz([{ name: "a.tf", content: "x" }]), "0".repeat(64));
    await write("1.0.2", await makeTarGz([{ name: "ok.tf", content: "fine\n" }]));
    const config = await buildConfig({ cacheDir: join(dir.path, "cache") });
    const im = await importTree(config, tree);
    assertEquals(im.modules.imported, 1);
    assertEquals(im.modules.refused.length, 2);
    assertMatch(im.modules.refused.join("\n"), /1\.0\.0: refused: entry "\.\.\/\.\.\/escape\.tf"/);
    assertMatch(im.modules.refused.join("\n"), /1\.0\.1: its bytes .* differ from its record/);
    const stored = join(dir.path, "cache/modules", H, "evil/m/aws");
    const names = [];
    for await (const e of Deno.readDir(stored)) names.push(e.name);
    assertEquals(names.sort(), ["1.0.2.json", "1.0.2.tar.gz"]);
    assertEquals(
      sha256Hex(await Deno.readFile(join(stored, "1.0.2.tar.gz"))),
      sha256Hex(await Deno.readFile(join(side, "1.0.2.tar.gz"))),
    );
  },
});

Deno.test({
  name: "module archives count in the quota: the server evicts the least recently used, prune too",
  async fn() {
    await using dir = await tempDir();
    await using reg = await startFakeModuleRegistry();
    // Incompressible content, so each archive is about 40 KB.
    const blob = (seed: number) =>
      Uint8Array.from(
        { length: 40_000 },
        (_, i) => (i * 7919 + seed * 104729) % 251 ^ (i >> 3) & 0xff,
      );
    const mods = new Map<string, string>();
    for (const v of ["1.0.0", "1.0.1", "1.0.2"]) {
      reg.archives.set(
        `${v}.tgz`,
        await makeTarGz([{ name: "blob.bin", content: blob(Number(v.at(-1))) }]),
      );
      mods.set(v, `${reg.url}archives/${v}.tgz`);
    }
    reg.modules.set("example/big/aws", mods);
    const cacheDir = join(dir.path, "cache");
    const t = await makeTestApp(undefined, cacheDir, {
      upstreams: { [H]: { url: reg.url } },
      maxCacheSize: "100KB",
    });
    const base = `/v1/modules/${H}/example/big/aws`;
    const stored = async () => {
      const out: string[] = [];
      for await (const e of Deno.readDir(join(cacheDir, "modules", H, "example/big/aws"))) {
        out.push(e.name);
      }
      return out.sort();
    };
    try {
      for (const v of ["1.0.0", "1.0.1", "1.0.2"]) {
        const r = await t.get(`${base}/${v}/module.tar.gz`);
        assertEquals(r.status, 200);
        await bytesOf(r);
        await t.app.settle();
      }
      // 3 × ~40 KB do not fit in 100 KB: the oldest went, record and archive.
      assertEquals(await stored(), ["1.0.1.json", "1.0.1.tar.gz", "1.0.2.json", "1.0.2.tar.gz"]);
      // Evicted means fetched again when asked for.
      await bytesOf(await t.get(`${base}/1.0.0/module.tar.gz`));
      assertEquals(reg.count("/archives/1.0.0.tgz"), 2);
    } finally {
      await t.app.close();
    }
    const config = await writeConfig(dir.path, { cacheDir, upstreams: { [H]: { url: reg.url } } });
    const io = captureIo();
    const { pruneCommand } = await import("../lib/commands/prune.ts");
    assertEquals(await pruneCommand.run(["-c", config, "--max-size", "50KB"], testContext(io)), 0);
    assertMatch(
      io.outLines.join("\n"),
      /evicted module modules\/registry\.terraform\.io\/example\/big\/aws\/1\.0\.\d\.tar\.gz/,
    );
    assertEquals((await stored()).length, 2, "one module version left");
  },
});
