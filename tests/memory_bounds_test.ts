/**
 * The per-connection memory an archive download may hold (issue 12, memory):
 * the peak RSS under 16 concurrent downloads rests on each body reading at
 * most 256 KiB at a time and nothing before the socket asks for it.
 * @module
 */
import { assert, assertEquals } from "../lib/deps/assert.ts";
import { serveFile } from "../lib/http/serve_file.ts";
import { sha256Hex } from "./_helpers.ts";

/** The largest read one archive body may make (bench/memory.ts measured the peak with it). */
const MAX_READ = 256 * 1024;

/** A 5 MiB "file" whose bytes depend on their offset, recording every read's size. */
function fakeFile(size: number) {
  const reads: number[] = [];
  let pos = 0;
  let closed = false;
  return {
    reads,
    get closed() {
      return closed;
    },
    file: {
      read(buf: Uint8Array): Promise<number | null> {
        reads.push(buf.length);
        const n = Math.min(buf.length, size - pos);
        if (n <= 0) return Promise.resolve(null);
        for (let i = 0; i < n; i++) buf[i] = (pos + i) % 251;
        pos += n;
        return Promise.resolve(n);
      },
      seek(offset: number): Promise<number> {
        pos = offset;
        return Promise.resolve(pos);
      },
      close() {
        closed = true;
      },
    },
  };
}

Deno.test("an archive body reads at most 256 KiB at a time, only when pulled, one chunk per pull", async () => {
  const size = 5 * 1024 * 1024 + 123;
  const expected = new Uint8Array(size).map((_, i) => i % 251);
  const f = fakeFile(size);
  const res = serveFile(new Request("http://x/a.zip"), {
    file: f.file,
    size,
    mtime: null,
    sha256: sha256Hex(expected),
    contentType: "application/zip",
  });
  assertEquals(res.status, 200);
  // Nothing is read before the consumer (the socket writer) asks.
  await new Promise((r) => setTimeout(r, 10));
  assertEquals(f.reads.length, 0, "no read before the first pull");
  const reader = res.body!.getReader();
  const parts: Uint8Array[] = [];
  let pulls = 0;
  for (;;) {
    const r = await reader.read();
    if (r.done) break;
    pulls++;
    parts.push(r.value.slice());
    // One read per chunk handed out: nothing read ahead of the consumer.
    assertEquals(f.reads.length, pulls, `reads after ${pulls} pulls`);
  }
  assert(f.reads.every((n) => n <= MAX_READ), `read sizes: ${[...new Set(f.reads)]}`);
  assertEquals(f.reads.length, Math.ceil(size / MAX_READ), "reads of the full bound, not smaller");
  const got = new Uint8Array(size);
  let at = 0;
  for (const p of parts) {
    got.set(p, at);
    at += p.length;
  }
  assertEquals(at, size);
  assertEquals(sha256Hex(got), sha256Hex(expected));
  assert(f.closed, "the file is closed at the end");
});
