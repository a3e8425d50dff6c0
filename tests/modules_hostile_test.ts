/**
 * Red team of the module cache: archives and sources a hostile module
 * registry or archive host could send, beyond what modules_test covers.
 * Each test names the attack; every one failed on the code before its fix.
 */
import { assert, assertEquals, assertMatch } from "../lib/deps/assert.ts";
import { join } from "../lib/deps/path.ts";
import { HostileArchiveError, unpackTarGz } from "../lib/modules/unpack.ts";
import { makeTarGz, type TarEntry } from "./fake_module_registry.ts";
import { tempDir } from "./_helpers.ts";

/** The error `p` rejects with (the test fails when it resolves). */
async function rejection(p: Promise<unknown>): Promise<Error> {
  try {
    await p;
  } catch (e) {
    return e as Error;
  }
  throw new Error("expected a rejection");
}

/** A stream of the bytes, in one chunk. */
function streamOf(b: Uint8Array): ReadableStream<Uint8Array> {
  return new Blob([b as Uint8Array<ArrayBuffer>]).stream();
}

/** Entry types makeTarGz does not name but writes as given (PAX, GNU longname). */
function raw(name: string, type: string, content: string | Uint8Array): TarEntry {
  return { name, type: type as "0", content };
}

Deno.test("tar: bytes carried by directory entries count toward the size bound (not buffered unbounded)", async () => {
  await using d = await tempDir();
  // A directory entry whose header claims 3 MiB of payload: skipped, but read
  // into memory whole before; now counted like file content.
  const gz = await makeTarGz([{ name: "d/", type: "5", content: new Uint8Array(3 * 2 ** 20) }]);
  const err = await rejection(
    unpackTarGz(streamOf(gz), d.path, { maxBytes: 2 ** 20, maxFiles: 100 }),
  );
  assert(err instanceof HostileArchiveError, String(err));
  assertMatch(err.message, /size limit/);
});

Deno.test("tar: a PAX global header is bounded like a PAX extended header", async () => {
  await using d = await tempDir();
  const gz = await makeTarGz([
    raw("pax_global_header", "g", new Uint8Array(200 * 1024)),
    { name: "a.tf", content: "x" },
  ]);
  const err = await rejection(
    unpackTarGz(streamOf(gz), d.path, { maxBytes: 2 ** 20, maxFiles: 100 }),
  );
  assert(err instanceof HostileArchiveError, String(err));
  assertMatch(err.message, /extended header/);
});

Deno.test("tar: PAX and GNU longname headers count toward the entry bound (a stream of headers ends)", async () => {
  await using d = await tempDir();
  const entries: TarEntry[] = [];
  // 4 × maxFiles is the entry bound: 50 header-only entries with maxFiles 5.
  for (let i = 0; i < 50; i++) entries.push(raw("h", i % 2 ? "x" : "L", `name${i}`));
  entries.push({ name: "a.tf", content: "x" });
  const gz = await makeTarGz(entries);
  const err = await rejection(
    unpackTarGz(streamOf(gz), d.path, { maxBytes: 2 ** 20, maxFiles: 5 }),
  );
  assert(err instanceof HostileArchiveError, String(err));
  assertMatch(err.message, /more than 20 entries/);
});

Deno.test("tar: a well-formed archive with PAX path and a GNU longname still unpacks", async () => {
  await using d = await tempDir();
  const long = `${"a".repeat(120)}/b.tf`;
  const enc = new TextEncoder();
  const rec = (k: string, v: string) => {
    const body = ` ${k}=${v}\n`;
    let len = enc.encode(body).length + 1;
    while (String(len).length + enc.encode(body).length !== len) len++;
    return `${len}${body}`;
  };
  const gz = await makeTarGz([
    raw("PaxHeaders/x", "x", rec("path", long)),
    { name: "ignored", content: "pax\n" },
    raw("././@LongLink", "L", "dir/gnu.tf\0"),
    { name: "ignored2", content: "gnu\n" },
  ]);
  const got = await unpackTarGz(streamOf(gz), d.path, { maxBytes: 2 ** 20, maxFiles: 5 });
  assertEquals(got.files, 2);
  assertEquals(await Deno.readTextFile(join(d.path, long)), "pax\n");
  assertEquals(await Deno.readTextFile(join(d.path, "dir/gnu.tf")), "gnu\n");
  assert(!(await Deno.stat(join(d.path, "ignored")).catch(() => null)));
});
