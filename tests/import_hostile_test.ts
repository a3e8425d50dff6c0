/**
 * A malicious `repoxy import` tree (issue 10, row 12): a zip that is a link
 * to /dev/zero, a FIFO named like a zip, a 300 MB (sparse) version JSON, an
 * archive over `limits.archiveSize` and a link to a directory. Each is
 * refused by name without being read; the good archive beside them is
 * imported. The import runs as its own process with a time limit, so a FIFO
 * that blocked it fails the test instead of hanging it.
 * @module
 */
import { assert, assertEquals, assertMatch } from "../lib/deps/assert.ts";
import { join } from "../lib/deps/path.ts";
import { hashZipH1 } from "../lib/integrity/dirhash.ts";
import { importTree } from "../lib/commands/import.ts";
import { buildConfig } from "../lib/config/config.ts";
import { runCli, writeConfig } from "./_cli.ts";
import { makeProviderZip } from "./_zip.ts";
import { sha256Hex, tempDir } from "./_helpers.ts";

const H = "registry.terraform.io";
const TIME_LIMIT_MS = 30_000;

const tools = ["mkfifo", "truncate"].filter((t) => {
  try {
    return !new Deno.Command(t, { args: ["--version"], stdout: "null", stderr: "null" })
      .outputSync().success;
  } catch {
    return true;
  }
});
// deno-lint-ignore no-console
if (tools.length > 0) console.log(`SKIP: import_hostile_test needs ${tools.join(", ")}`);

async function sh(cmd: string, ...args: string[]) {
  const out = await new Deno.Command(cmd, { args, stderr: "piped" }).output();
  if (!out.success) {
    throw new Error(`${cmd} ${args.join(" ")}: ${new TextDecoder().decode(out.stderr)}`);
  }
}

Deno.test({
  name:
    "import refuses links, FIFOs, oversized files and linked dirs by name, and imports the rest",
  ignore: tools.length > 0,
  async fn() {
    await using dir = await tempDir();
    const cacheDir = join(dir.path, "cache");
    const src = join(dir.path, "src");
    const pdir = join(src, H, "example", "alpha");
    await Deno.mkdir(pdir, { recursive: true });
    const name = (v: string, pl: string) => `terraform-provider-alpha_${v}_${pl}.zip`;

    // The one good archive, listed by zh: and h1:.
    const good = await makeProviderZip("alpha", "1.0.0", "linux_amd64");
    await Deno.writeFile(join(pdir, name("1.0.0", "linux_amd64")), good);
    const h1 = await hashZipH1(join(pdir, name("1.0.0", "linux_amd64")));
    const listed = (hashes: string[]) => ({ hashes, url: "x.zip" });
    await Deno.writeTextFile(
      join(pdir, "1.0.0.json"),
      JSON.stringify({
        archives: {
          linux_amd64: listed([h1, `zh:${sha256Hex(good)}`]),
          darwin_arm64: listed([`zh:${"0".repeat(64)}`]),
          windows_amd64: listed([`zh:${"0".repeat(64)}`]),
        },
      }),
    );
    // A zip that is a link to an endless device.
    await Deno.symlink("/dev/zero", join(pdir, name("1.0.0", "darwin_arm64")));
    // A FIFO named like a zip: opening it would block forever.
    await sh("mkfifo", join(pdir, name("1.0.0", "windows_amd64")));
    // A 300 MB version JSON (sparse: fast to make) beside a zip that needs it.
    await Deno.writeFile(join(pdir, name("1.1.0", "linux_amd64")), good);
    await sh("truncate", "-s", "300M", join(pdir, "1.1.0.json"));
    // An archive over limits.archiveSize (1 MiB here), listed.
    const big = join(pdir, name("1.2.0", "linux_amd64"));
    await sh("truncate", "-s", "2M", big);
    await Deno.writeTextFile(
      join(pdir, "1.2.0.json"),
      JSON.stringify({ archives: { linux_amd64: listed([`zh:${"0".repeat(64)}`]) } }),
    );
    // A provider directory that is a link out of the tree.
    await Deno.symlink("/etc", join(src, H, "example", "linked"));

    const config = await writeConfig(dir.path, {
      cacheDir,
      upstreams: { [H]: { url: "http://127.0.0.1:9/" } },
      limits: { archiveSize: "1MiB" },
    });
    const run = await runCli(["import", "-c", config, src], { timeoutMs: TIME_LIMIT_MS });
    assertEquals(run.timedOut, false, `import hung:\n${run.stderr}`);
    assertEquals(run.code, 1, run.stderr);
    const refused = (pattern: RegExp) => assertMatch(run.stderr, pattern);
    refused(/REFUSED .*1\.0\.0 darwin_arm64 .*_darwin_arm64\.zip is a symbolic link/);
    refused(/REFUSED .*1\.0\.0 windows_amd64 .*_windows_amd64\.zip is a FIFO/);
    refused(/REFUSED .*1\.1\.0 linux_amd64 .*1\.1\.0\.json refused: 314572800 bytes, over/);
    refused(/REFUSED .*1\.2\.0 linux_amd64 .* 2097152 bytes, over limits\.archiveSize/);
    refused(/example\/linked: a symbolic link; not followed/);
    assertMatch(run.stdout, /1 imported/);

    const stored = join(cacheDir, "packages", H, "example", "alpha");
    assertEquals(
      (await Array.fromAsync(Deno.readDir(stored))).map((e) => e.name),
      [name("1.0.0", "linux_amd64")],
    );
    assertEquals(
      sha256Hex(await Deno.readFile(join(stored, name("1.0.0", "linux_amd64")))),
      sha256Hex(good),
    );
    // Nothing of /dev/zero or the big files reached the cache's disk.
    let bytes = 0;
    const du = async (d: string) => {
      for await (const e of Deno.readDir(d)) {
        const p = join(d, e.name);
        const st = await Deno.lstat(p);
        if (st.isDirectory) await du(p);
        else bytes += st.blocks! * 512;
      }
    };
    await du(cacheDir);
    assert(bytes < 1024 * 1024, `the cache holds ${bytes} bytes`);
  },
});

Deno.test("import reports a directory it cannot read and goes on with the rest", async () => {
  await using dir = await tempDir();
  const src = join(dir.path, "src");
  const good = join(src, H, "example", "alpha");
  await Deno.mkdir(good, { recursive: true });
  await Deno.mkdir(join(src, H, "locked", "beta"), { recursive: true });
  const zip = await makeProviderZip("alpha", "1.0.0", "linux_amd64");
  await Deno.writeFile(join(good, "terraform-provider-alpha_1.0.0_linux_amd64.zip"), zip);
  await Deno.writeTextFile(
    join(good, "1.0.0.json"),
    JSON.stringify({ archives: { linux_amd64: { hashes: [`zh:${sha256Hex(zip)}`] } } }),
  );
  const config = await buildConfig({ cacheDir: join(dir.path, "cache") }, {}, dir.path);
  // Tests run as root here, so a chmod 000 directory would still be readable:
  // the listing of "locked" fails the way EACCES makes it fail.
  const readDir = Deno.readDir;
  const locked = join(src, H, "locked");
  Object.assign(Deno, {
    readDir: (path: string | URL) =>
      path === locked
        ? {
          [Symbol.asyncIterator]: () => ({
            next: () =>
              Promise.reject(new Deno.errors.PermissionDenied("Permission denied (os error 13)")),
          }),
        }
        : readDir(path),
  });
  try {
    const report = await importTree(config, src);
    assertEquals(report.problems, [`${locked}: cannot be read: Permission denied (os error 13)`]);
    assertEquals(report.items.map((i) => i.status), ["imported"]);
  } finally {
    Object.assign(Deno, { readDir });
  }
});
