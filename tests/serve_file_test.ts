/**
 * HTTP semantics of serve_file.ts: range parsing, conditional requests, and
 * serveFile/serveBytes over real temp files, handler-level (no socket).
 */
import { assert, assertEquals, assertMatch } from "../lib/deps/assert.ts";
import { join } from "../lib/deps/path.ts";
import { type BodyEnd, READ_CHUNK, serveFile } from "../lib/http/serve_file.ts";
import { bodyEtag, serveBody, utf8Length } from "../lib/http/serve_body.ts";
import {
  etagMatches,
  ifRangeMatches,
  isNotModified,
  parseHttpDate,
  parseRange,
} from "../lib/http/conditional.ts";
import { bytesOf, sha256Hex, tempDir } from "./_helpers.ts";

const MTIME = new Date("2026-03-04T05:06:07.000Z");
const LAST_MODIFIED = MTIME.toUTCString();

Deno.test("parseRange() handles single ranges, suffixes and open ends", () => {
  assertEquals(parseRange("bytes=0-0", 10), { start: 0, end: 0 });
  assertEquals(parseRange("bytes=-1", 10), { start: 9, end: 9 });
  assertEquals(parseRange("bytes=4-", 10), { start: 4, end: 9 });
  assertEquals(parseRange("bytes=2-5", 10), { start: 2, end: 5 });
  assertEquals(parseRange("bytes=2-500", 10), { start: 2, end: 9 }, "end is clamped");
  assertEquals(parseRange("bytes=-500", 10), { start: 0, end: 9 }, "suffix longer than the file");
  assertEquals(parseRange("Bytes= 1 - 2 ", 10), { start: 1, end: 2 }, "unit case, spaces");
  assertEquals(parseRange("bytes=9-9", 10), { start: 9, end: 9 });
});

Deno.test("parseRange() answers unsatisfiable past the end and ignores what it cannot serve", () => {
  assertEquals(parseRange("bytes=10-", 10), "unsatisfiable");
  assertEquals(parseRange("bytes=10-20", 10), "unsatisfiable");
  assertEquals(parseRange("bytes=-0", 10), "unsatisfiable");
  for (const h of ["bytes=0-1,3-4", "bytes=-", "bytes=5-3", "items=0-1", "bytes=a-b", "0-1", ""]) {
    assertEquals(parseRange(h, 10), undefined, h);
  }
});

Deno.test("etagMatches() compares weakly, handles lists and *", () => {
  const etag = '"abc"';
  assert(etagMatches('"abc"', etag));
  assert(etagMatches('W/"abc"', etag));
  assert(etagMatches('"x", W/"abc" ,"y"', etag));
  assert(etagMatches("*", etag));
  assert(!etagMatches('"abd"', etag));
  assert(!etagMatches("abc", etag));
});

Deno.test("parseHttpDate() accepts the three HTTP date forms and nothing else", () => {
  const t = Date.parse("1994-11-06T08:49:37Z");
  assertEquals(parseHttpDate("Sun, 06 Nov 1994 08:49:37 GMT"), t);
  assertEquals(parseHttpDate("Sunday, 06-Nov-94 08:49:37 GMT"), t);
  assertEquals(parseHttpDate("Sun Nov  6 08:49:37 1994"), t);
  for (const bad of ["1", "2024-01-01", "yesterday", ""]) assert(Number.isNaN(parseHttpDate(bad)));
});

Deno.test("isNotModified() prefers If-None-Match and compares dates by the second", () => {
  const etag = '"e"';
  const h = (init: Record<string, string>) => new Headers(init);
  assert(isNotModified(h({ "if-none-match": '"e"' }), etag, MTIME));
  assert(!isNotModified(h({ "if-none-match": '"other"' }), etag, MTIME));
  // If-None-Match present: If-Modified-Since is not looked at.
  assert(
    !isNotModified(
      h({ "if-none-match": '"other"', "if-modified-since": LAST_MODIFIED }),
      etag,
      MTIME,
    ),
  );
  assert(isNotModified(h({ "if-modified-since": LAST_MODIFIED }), etag, MTIME));
  const later = new Date(MTIME.getTime() + 500); // same second as Last-Modified
  assert(isNotModified(h({ "if-modified-since": LAST_MODIFIED }), etag, later));
  const earlier = new Date(MTIME.getTime() - 1000).toUTCString();
  assert(!isNotModified(h({ "if-modified-since": earlier }), etag, MTIME));
  assert(!isNotModified(h({ "if-modified-since": "garbage" }), etag, MTIME));
  assert(!isNotModified(h({}), etag, MTIME));
});

Deno.test("ifRangeMatches() needs the strong ETag exactly or the Last-Modified date", () => {
  const etag = '"e"';
  assert(ifRangeMatches('"e"', etag, MTIME));
  assert(!ifRangeMatches('W/"e"', etag, MTIME), "a weak validator never matches");
  assert(!ifRangeMatches('"f"', etag, MTIME));
  assert(ifRangeMatches(LAST_MODIFIED, etag, MTIME));
  assert(!ifRangeMatches(new Date(MTIME.getTime() + 1000).toUTCString(), etag, MTIME));
  assert(!ifRangeMatches(LAST_MODIFIED, etag, null));
});

/** A temp file of `size` bytes (i → i % 251) served through serveFile. */
async function withFile(
  size: number,
  fn: (serve: (init?: RequestInit) => Promise<Response>, bytes: Uint8Array) => Promise<void>,
) {
  await using dir = await tempDir();
  const bytes = Uint8Array.from({ length: size }, (_, i) => i % 251);
  const path = join(dir.path, "f.zip");
  await Deno.writeFile(path, bytes);
  await Deno.utime(path, MTIME, MTIME);
  const serve = async (init: RequestInit = {}) => {
    const file = await Deno.open(path, { read: true });
    const st = await file.stat();
    return serveFile(new Request("http://x/f.zip", init), {
      file,
      size: st.size,
      mtime: st.mtime,
      sha256: sha256Hex(bytes),
      contentType: "application/zip",
    });
  };
  await fn(serve, bytes);
}

Deno.test("serveFile() sends the whole file with validators and caching headers", async () => {
  await withFile(1000, async (serve, bytes) => {
    const res = await serve();
    assertEquals(res.status, 200);
    assertEquals(res.headers.get("content-length"), "1000");
    assertEquals(res.headers.get("content-type"), "application/zip");
    assertEquals(res.headers.get("accept-ranges"), "bytes");
    assertEquals(res.headers.get("etag"), `"${sha256Hex(bytes)}"`);
    assertEquals(res.headers.get("last-modified"), LAST_MODIFIED);
    assertEquals(res.headers.get("cache-control"), "public, max-age=31536000, immutable");
    assertEquals(await bytesOf(res), bytes);
  });
});

Deno.test("serveFile() answers byte ranges with 206 and Content-Range", async () => {
  await withFile(1000, async (serve, bytes) => {
    for (
      const [range, start, end] of [
        ["bytes=0-0", 0, 0],
        ["bytes=-1", 999, 999],
        ["bytes=990-", 990, 999],
        ["bytes=10-19", 10, 19],
        ["bytes=500-5000", 500, 999],
      ] as const
    ) {
      const res = await serve({ headers: { range } });
      assertEquals(res.status, 206, range);
      assertEquals(res.headers.get("content-range"), `bytes ${start}-${end}/1000`, range);
      assertEquals(res.headers.get("content-length"), String(end - start + 1), range);
      assertEquals(await bytesOf(res), bytes.slice(start, end + 1), range);
    }
  });
});

Deno.test("serveFile() streams a range across several reads and sends exactly Content-Length bytes", async () => {
  const size = READ_CHUNK * 2 + 100;
  await withFile(size, async (serve, bytes) => {
    const start = READ_CHUNK - 7;
    const end = size - 50;
    const res = await serve({ headers: { range: `bytes=${start}-${end}` } });
    assertEquals(res.status, 206);
    const got = await bytesOf(res);
    assertEquals(got.length, Number(res.headers.get("content-length")));
    assertEquals(got, bytes.slice(start, end + 1));
    const whole = await bytesOf(await serve());
    assertEquals(sha256Hex(whole), sha256Hex(bytes));
  });
});

Deno.test("serveFile() answers 416 past the end, and 200 for multi-range or garbage", async () => {
  await withFile(1000, async (serve) => {
    for (const range of ["bytes=1000-", "bytes=5000-6000", "bytes=-0"]) {
      const res = await serve({ headers: { range } });
      assertEquals(res.status, 416, range);
      assertEquals(res.headers.get("content-range"), "bytes */1000", range);
      assertEquals(res.body, null);
    }
    for (const range of ["bytes=0-1,5-6", "bytes=x", "pages=1-2", "bytes=9-3"]) {
      const res = await serve({ headers: { range } });
      assertEquals(res.status, 200, range);
      assertEquals(res.headers.get("content-range"), null, range);
      assertEquals((await bytesOf(res)).length, 1000, range);
    }
  });
});

Deno.test("serveFile() honours Range only when If-Range matches the ETag or Last-Modified", async () => {
  await withFile(1000, async (serve, bytes) => {
    const etag = `"${sha256Hex(bytes)}"`;
    const fresh = await serve({ headers: { range: "bytes=0-9", "if-range": etag } });
    assertEquals(fresh.status, 206);
    assertEquals((await bytesOf(fresh)).length, 10);
    const byDate = await serve({ headers: { range: "bytes=0-9", "if-range": LAST_MODIFIED } });
    assertEquals(byDate.status, 206);
    await byDate.body?.cancel();
    for (
      const stale of [
        `"${"0".repeat(64)}"`,
        `W/${etag}`,
        new Date(MTIME.getTime() - 86400_000).toUTCString(),
      ]
    ) {
      const res = await serve({ headers: { range: "bytes=0-9", "if-range": stale } });
      assertEquals(res.status, 200, stale);
      assertEquals(await bytesOf(res), bytes, stale);
    }
  });
});

Deno.test("serveFile() answers 304 to a matching If-None-Match or If-Modified-Since", async () => {
  await withFile(1000, async (serve, bytes) => {
    const etag = `"${sha256Hex(bytes)}"`;
    for (
      const headers of [
        { "if-none-match": etag },
        { "if-none-match": `W/${etag}` },
        { "if-none-match": "*" },
        { "if-modified-since": LAST_MODIFIED },
        { "if-modified-since": new Date(MTIME.getTime() + 3600_000).toUTCString() },
      ]
    ) {
      const res = await serve({ headers });
      assertEquals(res.status, 304, JSON.stringify(headers));
      assertEquals(res.body, null);
      assertEquals(res.headers.get("etag"), etag);
      assertEquals(res.headers.get("cache-control"), "public, max-age=31536000, immutable");
    }
    // Validators that do not match get the file; If-None-Match wins over the date.
    for (
      const headers of [
        { "if-none-match": '"nope"' },
        { "if-none-match": '"nope"', "if-modified-since": LAST_MODIFIED },
        { "if-modified-since": new Date(MTIME.getTime() - 1000).toUTCString() },
      ]
    ) {
      const res = await serve({ headers });
      assertEquals(res.status, 200, JSON.stringify(headers));
      await res.body?.cancel();
    }
  });
});

Deno.test("serveFile() answers HEAD with the length and no body, ignoring Range", async () => {
  await withFile(1000, async (serve) => {
    const res = await serve({ method: "HEAD", headers: { range: "bytes=0-9" } });
    assertEquals(res.status, 200);
    assertEquals(res.headers.get("content-length"), "1000");
    assertEquals(res.headers.get("accept-ranges"), "bytes");
    assertEquals(res.body, null);
  });
});

Deno.test("serveFile() sends an empty file as 200 even when a range is asked for", async () => {
  await withFile(0, async (serve) => {
    for (const headers of [{}, { range: "bytes=0-0" }, { range: "bytes=-1" }]) {
      const res = await serve({ headers });
      assertEquals(res.status, 200, JSON.stringify(headers));
      assertEquals(res.headers.get("content-length"), "0");
      assertEquals((await bytesOf(res)).length, 0);
    }
  });
});

Deno.test("serveFile() reports how each body ended, once, including client aborts", async () => {
  await using dir = await tempDir();
  const path = join(dir.path, "f.zip");
  await Deno.writeFile(path, new Uint8Array(READ_CHUNK * 3));
  const ends: BodyEnd[] = [];
  const serve = async (init: RequestInit = {}) => {
    const file = await Deno.open(path, { read: true });
    return serveFile(new Request("http://x/f.zip", init), {
      file,
      size: (await file.stat()).size,
      mtime: null,
      sha256: "ab",
      contentType: "application/zip",
    }, { onFinish: (e) => ends.push(e) });
  };
  await bytesOf(await serve());
  const aborted = await serve();
  const reader = aborted.body!.getReader();
  await reader.read();
  await reader.cancel();
  await serve({ method: "HEAD" });
  await bytesOf(await serve({ headers: { range: "bytes=0-99" } }));
  assertEquals(ends, [
    { status: 200, bytes: READ_CHUNK * 3 },
    { status: 200, bytes: READ_CHUNK, note: "client went away" },
    { status: 200, bytes: 0 },
    { status: 206, bytes: 100 },
  ]);
});

Deno.test("serveBody() sets an ETag and answers 304 and HEAD, for text and bytes", async () => {
  const text = '{"versions":{"1.0.0":{}},"note":"caf\u00e9 \u{1F600}"}\n';
  const bytes = new TextEncoder().encode(text);
  assertEquals(utf8Length(text), bytes.length);
  for (const body of [text, bytes]) {
    const etag = bodyEtag(body);
    assertMatch(etag, /^"[0-9a-f]{16}-[0-9a-f]+"$/);
    assertEquals(bodyEtag(body), etag, "stable");
    const opts = { contentType: "application/json", cacheControl: "public, max-age=60", etag };
    const res = serveBody(new Request("http://x/i.json"), body, opts);
    assertEquals(res.status, 200);
    assertEquals(res.headers.get("etag"), etag);
    assertEquals(res.headers.get("content-type"), "application/json");
    assertEquals(res.headers.get("content-length"), String(bytes.length));
    assertEquals(await bytesOf(res), bytes);
    const notModified = serveBody(
      new Request("http://x/i.json", { headers: { "if-none-match": `W/${etag}` } }),
      body,
      opts,
    );
    assertEquals(notModified.status, 304);
    assertEquals(notModified.body, null);
    assertEquals(notModified.headers.get("etag"), etag);
    assertEquals(notModified.headers.get("cache-control"), "public, max-age=60");
    const head = serveBody(new Request("http://x/i.json", { method: "HEAD" }), body, opts);
    assertEquals(head.status, 200);
    assertEquals(head.headers.get("content-length"), String(bytes.length));
    assertEquals(head.body, null);
  }
  assert(bodyEtag('{"versions":{}}') !== bodyEtag('{"versions":{"1.0.0":{}}}'));
});
