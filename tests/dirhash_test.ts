import {
  assert,
  assertEquals,
  assertNotEquals,
  assertRejects,
  assertThrows,
} from "../lib/deps/assert.ts";
import { createHash } from "../lib/deps/crypto.ts";
import { dirname, join } from "../lib/deps/path.ts";
import { h1FromFileHashes, hashZipH1 } from "../lib/integrity/dirhash.ts";
import { ZipFormatError } from "../lib/integrity/zip_reader.ts";
import { makeZip, type ZipInput } from "./_zip.ts";

const enc = new TextEncoder();

function sha256Hex(data: Uint8Array | string): string {
  return createHash("sha256").update(data).digest("hex");
}

function sha256Base64(data: string): string {
  return createHash("sha256").update(data).digest("base64");
}

const EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

async function withTempDir<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await Deno.makeTempDir({ prefix: "dirhash_test_" });
  try {
    return await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

async function writeZip(dir: string, files: ZipInput[]): Promise<string> {
  const path = join(dir, "archive.zip");
  await Deno.writeFile(path, await makeZip(files));
  return path;
}

/** What hashZipH1 should give, computed from the inputs rather than the archive. */
function expectedH1(files: ZipInput[]): string {
  const last = new Map(files.map((f) => [f.name, f.data]));
  return h1FromFileHashes(
    files.map((f) => ({ name: f.name, sha256Hex: sha256Hex(last.get(f.name)!) })),
  );
}

Deno.test("h1FromFileHashes hashes Go's summary lines", () => {
  const a = sha256Hex("data for a");
  const b = sha256Hex("data for b");
  // dirhash.Hash1: "%x  %s\n" per file, sorted, then base64(sha256(all lines)).
  const summary = `${a}  a\n${b}  b/c.txt\n`;
  assertEquals(
    h1FromFileHashes([{ name: "b/c.txt", sha256Hex: b }, { name: "a", sha256Hex: a }]),
    "h1:" + sha256Base64(summary),
  );
});

Deno.test("h1FromFileHashes of no files is the hash of an empty summary", () => {
  assertEquals(h1FromFileHashes([]), "h1:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=");
});

Deno.test("h1FromFileHashes sorts names by UTF-8 bytes, not UTF-16 code units", () => {
  // U+FF5A (EF BD 9A) sorts before U+1F600 (F0 9F 98 80) in UTF-8, but after
  // it in UTF-16 (FF5A > D83D); uppercase sorts before lowercase.
  const names = ["z", "a", "B", "é", "😀", "ｚ"];
  const byteOrder = ["B", "a", "z", "é", "ｚ", "😀"];
  const files = names.map((name) => ({ name, sha256Hex: sha256Hex(name) }));
  const summary = (order: string[]) => order.map((n) => `${sha256Hex(n)}  ${n}\n`).join("");
  assertEquals(h1FromFileHashes(files), "h1:" + sha256Base64(summary(byteOrder)));
  const utf16Order = [...names].sort();
  assertNotEquals(utf16Order, byteOrder);
  assertNotEquals(h1FromFileHashes(files), "h1:" + sha256Base64(summary(utf16Order)));
});

Deno.test("h1FromFileHashes rejects newlines in names and malformed digests", () => {
  assertThrows(
    () => h1FromFileHashes([{ name: "a\nb", sha256Hex: EMPTY_SHA256 }]),
    /filenames with newlines are not supported/,
  );
  assertThrows(() => h1FromFileHashes([{ name: "a", sha256Hex: "abc" }]), /not a hex SHA-256/);
  // Go prints digests with %x, so case in the input must not matter.
  assertEquals(
    h1FromFileHashes([{ name: "a", sha256Hex: EMPTY_SHA256.toUpperCase() }]),
    h1FromFileHashes([{ name: "a", sha256Hex: EMPTY_SHA256 }]),
  );
});

/**
 * The committed fixture: a packed provider archive with a deflated executable
 * (mode 0755) `terraform-provider-fixture_v1.0.0`, `LICENSE`, `docs/readme.md`
 * and stored or deflated files named `docs/ünïcødé.txt`, `docs/ｚ-fullwidth.txt`
 * and `docs/😀-emoji.txt` (the last two order differently in UTF-8 and UTF-16).
 * It has no directory entries, so Terraform's hash of the unpacked directory
 * (which is what `terraform init` writes to the lock file) equals its hash of
 * the archive.
 */
const FIXTURE = decodeURIComponent(
  new URL("./fixtures/h1/terraform-provider-fixture_1.0.0_linux_amd64.zip", import.meta.url)
    .pathname,
);

/**
 * Computed by Terraform v1.11.4 (linux_amd64), not by our code: the fixture was
 * placed at `<mirror>/example.com/test/fixture/terraform-provider-fixture_1.0.0_linux_amd64.zip`,
 * a CLI config `provider_installation { filesystem_mirror { path = "<mirror>" } }`
 * was named by TF_CLI_CONFIG_FILE (with CHECKPOINT_DISABLE=1), and both
 * `terraform init` and `terraform providers lock -fs-mirror=<mirror> -platform=linux_amd64`,
 * run on a configuration requiring `example.com/test/fixture` version "1.0.0",
 * wrote this single h1 to `.terraform.lock.hcl`.
 */
const FIXTURE_H1_FROM_TERRAFORM = "h1:WN0UVMju9jT31vs/Spo0v4IHvabd3ZRXaoch0Qs+2+w=";

Deno.test("hashZipH1 matches the h1 Terraform computed for the fixture archive", async () => {
  assertEquals(await hashZipH1(FIXTURE), FIXTURE_H1_FROM_TERRAFORM);
});

Deno.test("hashZipH1 agrees with h1FromFileHashes over the archive's content", async () => {
  const files: ZipInput[] = [
    { name: "terraform-provider-x_v1.2.3", data: "#!/bin/sh\n".repeat(1000), method: "deflate" },
    { name: "B.txt", data: "upper" },
    { name: "a/é.txt", data: "accent", method: "deflate" },
    { name: "a/😀", data: "astral" },
    { name: "a/ｚ", data: "fullwidth" },
    { name: "empty", data: "" },
  ];
  await withTempDir(async (dir) => {
    assertEquals(await hashZipH1(await writeZip(dir, files)), expectedH1(files));
  });
});

Deno.test("hashZipH1 lists directory entries, as Go's HashZip does", async () => {
  const files: ZipInput[] = [
    { name: "docs/", data: "" },
    { name: "docs/readme.md", data: "# hi\n" },
  ];
  await withTempDir(async (dir) => {
    const h1 = await hashZipH1(await writeZip(dir, files));
    const summary = `${EMPTY_SHA256}  docs/\n${sha256Hex("# hi\n")}  docs/readme.md\n`;
    assertEquals(h1, "h1:" + sha256Base64(summary));
  });
});

Deno.test("hashZipH1 hashes the last of duplicate names for every occurrence", async () => {
  const files: ZipInput[] = [
    { name: "dup", data: "first" },
    { name: "other", data: "x" },
    { name: "dup", data: "second", method: "deflate" },
  ];
  await withTempDir(async (dir) => {
    const h1 = await hashZipH1(await writeZip(dir, files));
    const second = sha256Hex("second");
    const summary = `${second}  dup\n${second}  dup\n${sha256Hex("x")}  other\n`;
    assertEquals(h1, "h1:" + sha256Base64(summary));
    assertEquals(h1, expectedH1(files));
  });
});

Deno.test("hashZipH1 rejects names with newlines, bad archives and missing files", async () => {
  await withTempDir(async (dir) => {
    const newline = await writeZip(dir, [{ name: "a\nb", data: "x" }]);
    await assertRejects(() => hashZipH1(newline), /filenames with newlines are not supported/);

    const garbage = join(dir, "garbage.zip");
    await Deno.writeFile(garbage, enc.encode("this is not a zip archive at all"));
    await assertRejects(() => hashZipH1(garbage), ZipFormatError);

    const good = await makeZip([{ name: "a", data: "content" }]);
    const corrupt = join(dir, "corrupt.zip");
    const bad = good.slice();
    bad[30 + 1 + 2]! ^= 0xff; // a byte of a's stored content
    await Deno.writeFile(corrupt, bad);
    await assertRejects(() => hashZipH1(corrupt), ZipFormatError);

    await assertRejects(() => hashZipH1(join(dir, "missing.zip")), Deno.errors.NotFound);
  });
});

/** Terraform's name for the platform we run on, or undefined if it has none. */
function terraformPlatform(): string | undefined {
  const os =
    ({ linux: "linux", darwin: "darwin", windows: "windows", freebsd: "freebsd" } as Record<
      string,
      string | undefined
    >)[Deno.build.os];
  const arch = ({ x86_64: "amd64", aarch64: "arm64" } as Record<string, string | undefined>)[
    Deno.build.arch
  ];
  return os && arch ? `${os}_${arch}` : undefined;
}

async function haveTerraform(): Promise<boolean> {
  try {
    const { success } = await new Deno.Command("terraform", {
      args: ["version"],
      stdin: "null",
      stdout: "null",
      stderr: "null",
      env: { CHECKPOINT_DISABLE: "1" },
    }).output();
    return success;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return false;
    throw err;
  }
}

function skip(reason: string): void {
  // deno-lint-ignore no-console
  console.log(`SKIP: ${reason}`);
}

/**
 * A packed filesystem mirror holding one archive for example.com/test/fixture
 * 1.0.0, a CLI config pointing at it, and a configuration requiring it.
 * Returns a function running terraform in that configuration.
 */
async function terraformWorkspace(dir: string, zip: Uint8Array, platform: string) {
  const mirror = join(dir, "mirror");
  const work = join(dir, "work");
  const archive = join(
    mirror,
    "example.com/test/fixture",
    `terraform-provider-fixture_1.0.0_${platform}.zip`,
  );
  await Deno.mkdir(dirname(archive), { recursive: true });
  await Deno.mkdir(work);
  await Deno.writeFile(archive, zip);
  const cliConfig = join(dir, "cli.tfrc");
  await Deno.writeTextFile(
    cliConfig,
    `provider_installation {\n  filesystem_mirror {\n    path = ${
      JSON.stringify(mirror)
    }\n  }\n}\n`,
  );
  await Deno.writeTextFile(
    join(work, "main.tf"),
    `terraform {
  required_providers {
    fixture = {
      source  = "example.com/test/fixture"
      version = "1.0.0"
    }
  }
}
`,
  );
  const lockFile = join(work, ".terraform.lock.hcl");
  const run = async (...args: string[]) => {
    const out = await new Deno.Command("terraform", {
      args: [...args, "-no-color"],
      cwd: work,
      stdin: "null",
      env: {
        TF_CLI_CONFIG_FILE: cliConfig,
        CHECKPOINT_DISABLE: "1",
        TF_IN_AUTOMATION: "1",
        TF_INPUT: "0",
        TF_DATA_DIR: join(work, ".terraform"),
        TF_PLUGIN_CACHE_DIR: "",
      },
    }).output();
    const dec = new TextDecoder();
    return {
      success: out.success,
      output: dec.decode(out.stdout) + dec.decode(out.stderr),
    };
  };
  const lockedHashes = async () =>
    [...(await Deno.readTextFile(lockFile)).matchAll(/"(h1:[^"]+)"/g)].map((m) => m[1]);
  const writeLock = (hashes: string[]) =>
    Deno.writeTextFile(
      lockFile,
      `provider "example.com/test/fixture" {
  version     = "1.0.0"
  constraints = "1.0.0"
  hashes = [
${hashes.map((h) => `    ${JSON.stringify(h)},`).join("\n")}
  ]
}
`,
    );
  return { archive, run, lockedHashes, writeLock };
}

/** Fresh content every run, so agreement is not an accident of one fixture. */
function liveEntries(): ZipInput[] {
  const random = crypto.getRandomValues(new Uint8Array(60_000));
  const text = Array.from(
    { length: 30_000 },
    (_, i) => `line ${i} ${random[i % random.length]}\n`,
  ).join("");
  return [
    { name: "terraform-provider-fixture_v1.0.0", data: text, mode: 0o755, method: "deflate" },
    { name: "random.bin", data: random },
    { name: "CHANGELOG.md", data: `# ${crypto.randomUUID()}\n`, method: "deflate" },
    { name: "docs/guides/ünïcødé ß.md", data: "non-ASCII path\n", method: "deflate" },
    { name: "docs/ｚ.txt", data: "fullwidth\n" },
    { name: "docs/😀.txt", data: "astral\n" },
    { name: "docs/empty", data: "" },
  ];
}

// Decided before registration, so a missing terraform is reported as ignored,
// never as passed.
const TERRAFORM = await haveTerraform();
if (!TERRAFORM) skip("terraform is not on PATH; the live h1 checks against terraform are ignored");

Deno.test({
  name: "hashZipH1 matches terraform's own h1 for a freshly made archive",
  ignore: !TERRAFORM,
}, async () => {
  await withTempDir(async (dir) => {
    const ws = await terraformWorkspace(dir, await makeZip(liveEntries()), "linux_amd64");
    const { success, output } = await ws.run(
      "providers",
      "lock",
      `-fs-mirror=${join(dir, "mirror")}`,
      "-platform=linux_amd64",
    );
    assert(success, output);
    assertEquals(await ws.lockedHashes(), [await hashZipH1(ws.archive)]);
  });
});

Deno.test({
  name: "terraform accepts hashZipH1 of an archive with directory entries",
  ignore: !TERRAFORM,
}, async () => {
  const platform = terraformPlatform();
  if (!platform) return skip(`no terraform platform name for ${Deno.build.target}`);
  const files: ZipInput[] = [
    { name: "terraform-provider-fixture_v1.0.0", data: "#!/bin/sh\nexit 1\n", mode: 0o755 },
    { name: "docs/", data: "" },
    { name: "docs/readme.md", data: crypto.randomUUID(), method: "deflate" },
  ];
  await withTempDir(async (dir) => {
    const ws = await terraformWorkspace(dir, await makeZip(files), platform);
    const h1 = await hashZipH1(ws.archive);
    // `terraform init` checks a packed archive against the lock file with
    // dirhash.HashZip, which lists "docs/". The hash of the unpacked files,
    // which Terraform itself writes to lock files, leaves "docs/" out and is
    // rejected here: it makes a discriminating negative control.
    const unpacked = expectedH1(files.filter((f) => !f.name.endsWith("/")));
    assertNotEquals(h1, unpacked);

    await ws.writeLock([unpacked]);
    const rejected = await ws.run("init", "-input=false");
    assert(!rejected.success, rejected.output);
    assert(/doesn't match any of the checksums/.test(rejected.output), rejected.output);

    await ws.writeLock([h1]);
    const accepted = await ws.run("init", "-input=false");
    assert(accepted.success, accepted.output);
    assert((await ws.lockedHashes()).includes(h1));
  });
});
