/**
 * Go is the judge of the `h1:` hash: Terraform computes it with
 * golang.org/x/mod's dirhash.HashZip over Go's `archive/zip`. A small Go
 * program (tests/fixtures/h1_oracle, built here with the installed Go) hashes
 * every archive of the zip corpus (tests/_zip_corpus.ts), well-formed and
 * hostile, and lists what archive/zip reads from it; our reader must agree
 * archive by archive: the same h1: or a refusal where Go refuses, and the
 * same entries with the same contents.
 * @module
 */
import { assert, assertEquals } from "../lib/deps/assert.ts";
import { createHash } from "../lib/deps/crypto.ts";
import { join } from "../lib/deps/path.ts";
import { hashZipH1 } from "../lib/integrity/dirhash.ts";
import { openZipEntry, readZipEntries, zipEntryNameBytes } from "../lib/integrity/zip_reader.ts";
import { zipCorpus } from "./_zip_corpus.ts";
import { tempDir } from "./_helpers.ts";

const ORACLE_SRC = new URL("./fixtures/h1_oracle/", import.meta.url).pathname;

async function goVersion(): Promise<string | undefined> {
  try {
    const o = await new Deno.Command("go", { args: ["version"], stdout: "piped", stderr: "null" })
      .output();
    return o.success ? new TextDecoder().decode(o.stdout).trim() : undefined;
  } catch {
    return undefined;
  }
}
const GO = await goVersion();
// deno-lint-ignore no-console
if (!GO) console.log("SKIP: go is not installed (the Go oracle of zip_go_oracle_test)");

/** What the oracle prints per archive (one JSON line). */
interface GoResult {
  path: string;
  go: string;
  h1?: string;
  h1Error?: string;
  openError?: string;
  /** Central-directory order; `name` is base64 of the raw bytes. */
  entries: Array<{ name: string; sha256?: string; error?: string }>;
}

/** Builds the oracle offline (standard library only) into `dir`. */
async function buildOracle(dir: string): Promise<string> {
  const bin = join(dir, "h1oracle");
  const o = await new Deno.Command("go", {
    args: ["build", "-o", bin, "."],
    cwd: ORACLE_SRC,
    env: { GOFLAGS: "-mod=mod", GOPROXY: "off", GOTOOLCHAIN: "local", CGO_ENABLED: "0" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert(o.success, `go build failed: ${new TextDecoder().decode(o.stderr)}`);
  return bin;
}

function b64(bytes: Uint8Array): string {
  return btoa(String.fromCharCode(...bytes));
}

/** Our reader's view in the oracle's shape: each entry hashed on its own. */
async function ours(path: string): Promise<Omit<GoResult, "path" | "go">> {
  const result: Omit<GoResult, "path" | "go"> = { entries: [] };
  try {
    result.h1 = await hashZipH1(path);
  } catch (e) {
    result.h1Error = String(e);
  }
  using file = await Deno.open(path);
  try {
    for (const entry of await readZipEntries(file)) {
      const item: GoResult["entries"][number] = { name: b64(zipEntryNameBytes(entry)) };
      try {
        const hash = createHash("sha256");
        for await (const chunk of openZipEntry(file, entry)) hash.update(chunk);
        item.sha256 = hash.digest("hex");
      } catch (e) {
        item.error = String(e);
      }
      result.entries.push(item);
    }
  } catch (e) {
    result.openError = String(e);
  }
  return result;
}

/**
 * Where we differ from Go on purpose, and what each side does there. Nothing
 * else may differ.
 */
const ON_PURPOSE: Record<string, { why: string; goBefore?: number }> = {
  // lib/integrity/dirhash.ts H1_BOUNDS (tests/zip_bomb_test.ts): two records
  // sharing one deflate stream is how a 1 MB zip inflates 160 GB.
  "overlapping-entries": { why: "overlapping entries are refused as a zip bomb" },
  // Go 1.20 and later (Terraform 1.11 is built with go1.23) refuse content in a
  // directory entry (archive/zip dirReader); older Go read it. We follow the
  // Go that Terraform is built with, so this differs only from an old oracle.
  "directory-with-content": { why: "a directory with content is refused", goBefore: 20 },
};

function goMinor(version: string): number {
  return Number(/^go1\.(\d+)/.exec(version)?.[1] ?? 0);
}

/** Only whether each side failed, not Go's wording. */
function shape(r: Omit<GoResult, "path" | "go">) {
  return {
    h1: r.h1 ?? "refused",
    opens: r.openError === undefined,
    entries: r.entries.map((e) => ({ name: e.name, content: e.sha256 ?? "refused" })),
  };
}

Deno.test({
  name:
    "every archive of the zip corpus: our h1:, entries and contents are what Go's archive/zip and dirhash give",
  ignore: !GO,
  async fn() {
    await using dir = await tempDir();
    const oracle = await buildOracle(dir.path);
    const corpus = await zipCorpus();
    const paths: string[] = [];
    for (const c of corpus) {
      const path = join(dir.path, `${c.name}.zip`);
      await Deno.writeFile(path, c.bytes);
      paths.push(path);
    }
    const run = await new Deno.Command(oracle, { args: paths, stdout: "piped" }).output();
    assert(run.success, "the oracle ran");
    const lines = new TextDecoder().decode(run.stdout).trim().split("\n");
    const go = lines.map((l) => JSON.parse(l) as GoResult);
    assertEquals(go.map((g) => g.path), paths);

    // The corpus exercises both sides of Go's judgement.
    const accepted = go.filter((g) => g.h1).length;
    assert(accepted >= 15 && go.length - accepted >= 10, `${accepted} of ${go.length} hashed`);
    const disagreements: string[] = [];
    for (const [i, c] of corpus.entries()) {
      const want = shape(go[i]!);
      const got = shape(await ours(paths[i]!));
      const purpose = ON_PURPOSE[c.name];
      if (purpose && (purpose.goBefore === undefined || goMinor(go[i]!.go) < purpose.goBefore)) {
        // Go hashes it, we refuse it, and the entries are still read alike.
        assert(want.h1.startsWith("h1:"), `${c.name}: Go hashes it`);
        assertEquals(got.h1, "refused", `${c.name}: ${purpose.why}`);
        continue;
      }
      if (JSON.stringify(got) !== JSON.stringify(want)) {
        disagreements.push(
          `${c.name}:\n  go (${go[i]!.go}): ${JSON.stringify(go[i])}\n  ours: ${
            JSON.stringify(got)
          }`,
        );
      }
    }
    assertEquals(disagreements, [], `\n${disagreements.join("\n")}`);
  },
});
