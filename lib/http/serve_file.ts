/**
 * HTTP semantics of cached responses: conditional requests (ETag,
 * Last-Modified, If-None-Match, If-Modified-Since → 304), single byte ranges
 * (206/416, If-Range) and HEAD, for archives served from an open file and for
 * metadata JSON served from memory.
 *
 * Archive bodies are our own pull streams with large reads: on Deno 2.9 the
 * built-in `file.readable` reads 64 KiB per blocking-pool round trip and was
 * measured at 0.6× nginx for one client (bench/RESULTS.md); 512 KiB reads are
 * on par. When the consumer is Deno's own socket writer each chunk's buffer is
 * released as soon as the writer has taken it (see {@link markSocketRequest}
 * and buffers.ts).
 * @module
 */
import { releaseChunk } from "../base/buffers.ts";

/** Bytes that can be read from a position: an open file, or any stored object. */
export interface RangeReadable {
  read(buf: Uint8Array): Promise<number | null>;
  seek(offset: number, whence: Deno.SeekMode): Promise<number>;
  close(): void;
}

/** What a cached file response needs. */
export interface FileToServe {
  /** Open handle; `serveFile` takes ownership and always closes it. */
  file: RangeReadable;
  /** Size of the open file (from the handle, not a path stat). */
  size: number;
  mtime: Date | null;
  /** Lowercase hex sha256 of the whole file: the strong ETag. */
  sha256: string;
  contentType: string;
}

/** How a response ended, for the access log. */
export interface BodyEnd {
  status: number;
  /** Body bytes handed to the server (all of them unless `note` says otherwise). */
  bytes: number;
  /** Set when the body did not complete (client gone, read error). */
  note?: string;
}

/** Options of {@link serveFile}. */
export interface ServeFileOptions {
  /** Extra response headers (also on 304/416). */
  headers?: HeadersInit;
  /** Default: `public, max-age=31536000, immutable` (cached archives never change). */
  cacheControl?: string;
  /** Called exactly once: when the body was sent, abandoned, or at once without a body. */
  onFinish?: (end: BodyEnd) => void;
}

/** Archive bodies are read in chunks this large. */
export const READ_CHUNK = 512 * 1024;

const IMMUTABLE = "public, max-age=31536000, immutable";

const socketRequests = new WeakSet<Request>();

/**
 * Marks a request as answered straight onto a socket by `Deno.serve` (the
 * server calls this; handler-level tests do not). Only then do body streams
 * made here detach each chunk's buffer once the next one is asked for: Deno's
 * writer has by then taken its own reference to the bytes, so memory is freed
 * without waiting for a GC. A JavaScript consumer that keeps chunks (for
 * example `Response.arrayBuffer()`, or a wrapper stream put between the
 * handler and the server) would see them emptied, so nothing may wrap these
 * bodies on the way to a marked request.
 */
export function markSocketRequest(req: Request): void {
  socketRequests.add(req);
}

/**
 * Weak comparison of an `If-None-Match` value with an ETag (RFC 9110 §13.1.2):
 * `*` matches anything, `W/` prefixes are ignored, lists are comma-separated.
 */
export function etagMatches(ifNoneMatch: string, etag: string): boolean {
  const value = ifNoneMatch.trim();
  if (value === "*") return true;
  const want = etag.startsWith("W/") ? etag.slice(2) : etag;
  for (const part of value.split(",")) {
    let t = part.trim();
    if (t.startsWith("W/")) t = t.slice(2);
    if (t === want) return true;
  }
  return false;
}

/**
 * Parses an HTTP-date (RFC 9110 §5.6.7: IMF-fixdate, or the obsolete RFC 850
 * and asctime forms); NaN for anything else. `Date.parse` alone would accept
 * strings such as "1" as a date.
 */
export function parseHttpDate(value: string): number {
  const v = value.trim();
  if (/^[A-Za-z]{3}, \d{2} [A-Za-z]{3} \d{4} \d{2}:\d{2}:\d{2} GMT$/.test(v)) return Date.parse(v);
  if (/^[A-Za-z]{6,9}, \d{2}-[A-Za-z]{3}-\d{2} \d{2}:\d{2}:\d{2} GMT$/.test(v)) {
    return Date.parse(v);
  }
  if (/^[A-Za-z]{3} [A-Za-z]{3} [ \d]\d \d{2}:\d{2}:\d{2} \d{4}$/.test(v)) {
    return Date.parse(`${v} GMT`);
  }
  return NaN;
}

/**
 * Whether a request is answered with 304 Not Modified: If-None-Match when
 * present (weak comparison), else If-Modified-Since against the second-
 * truncated modification time.
 */
export function isNotModified(headers: Headers, etag: string, mtime: Date | null): boolean {
  const inm = headers.get("if-none-match");
  if (inm !== null) return etagMatches(inm, etag);
  const ims = headers.get("if-modified-since");
  if (ims !== null && mtime) {
    const since = parseHttpDate(ims);
    if (!Number.isNaN(since)) return Math.floor(mtime.getTime() / 1000) * 1000 <= since;
  }
  return false;
}

/**
 * Whether `If-Range` lets the Range header apply: it must equal the strong
 * ETag exactly, or be the Last-Modified date. Weak or other validators mean
 * "send the whole file", so a resumed download never splices two versions.
 */
export function ifRangeMatches(ifRange: string, etag: string, mtime: Date | null): boolean {
  const v = ifRange.trim();
  if (v.startsWith("W/")) return false;
  if (v.startsWith('"')) return v === etag;
  const date = parseHttpDate(v);
  return mtime !== null && !Number.isNaN(date) &&
    Math.floor(mtime.getTime() / 1000) === Math.floor(date / 1000);
}

/** A satisfiable byte range (inclusive), "unsatisfiable" (416), or undefined (ignore Range). */
export type RangeResult = { start: number; end: number } | "unsatisfiable" | undefined;

/**
 * Parses a `Range` header against a representation of `size` bytes. Only one
 * range is supported; several ranges, other units or syntax errors return
 * undefined, meaning the header is ignored and the whole body is sent
 * (RFC 9110 allows that, and it is what std's serveFile does).
 */
export function parseRange(header: string, size: number): RangeResult {
  const m = /^bytes=\s*(\d*)\s*-\s*(\d*)\s*$/i.exec(header.trim());
  if (!m || (m[1] === "" && m[2] === "")) return undefined;
  if (m[1] === "") {
    // bytes=-N: the last N bytes.
    const n = Number(m[2]);
    if (n === 0) return "unsatisfiable";
    return { start: Math.max(0, size - n), end: size - 1 };
  }
  const start = Number(m[1]);
  if (m[2] !== "" && Number(m[2]) < start) return undefined; // invalid range-spec: ignore it
  if (start >= size) return "unsatisfiable";
  return { start, end: m[2] === "" ? size - 1 : Math.min(Number(m[2]), size - 1) };
}

/**
 * A body of `length` bytes of `file` from `start`, read in large chunks on
 * demand (highWaterMark 0: nothing is read before the socket wants it).
 * Closes the file when done, on error, or when cancelled.
 */
function fileBody(
  file: RangeReadable,
  start: number,
  length: number,
  releaseChunks: boolean,
  done: (bytes: number, note?: string) => void,
): ReadableStream<Uint8Array> {
  let sent = 0;
  let last: Uint8Array | undefined;
  let closed = false;
  const finish = (note?: string) => {
    if (closed) return;
    closed = true;
    if (releaseChunks) releaseChunk(last);
    last = undefined;
    try {
      file.close();
    } catch { /* already closed */ }
    done(sent, note);
  };
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      if (releaseChunks) releaseChunk(last);
      last = undefined;
      try {
        if (sent === 0 && start > 0) await file.seek(start, Deno.SeekMode.Start);
        const buf = new Uint8Array(Math.min(READ_CHUNK, length - sent));
        const n = await file.read(buf);
        if (n === null || n === 0) {
          throw new Error(`file ended after ${sent} of ${length} bytes`);
        }
        sent += n;
        last = n === buf.length ? buf : buf.subarray(0, n);
        controller.enqueue(last);
        if (sent >= length) {
          controller.close();
          finish();
        }
      } catch (e) {
        finish(`read failed: ${(e as Error).message}`);
        controller.error(e);
      }
    },
    cancel() {
      finish("client went away");
    },
  }, { highWaterMark: 0 });
}

/**
 * Builds the response for a cached archive: 200, 206, 304, 416 or a HEAD
 * answer. Takes ownership of `f.file`: it is closed when the body ends, is
 * cancelled, or is not needed.
 */
export function serveFile(req: Request, f: FileToServe, opts: ServeFileOptions = {}): Response {
  let finished = false;
  const finish = (end: BodyEnd) => {
    if (finished) return;
    finished = true;
    opts.onFinish?.(end);
  };
  const noBody = (status: number, headers: Headers) => {
    try {
      f.file.close();
    } catch { /* closed */ }
    finish({ status, bytes: 0 });
    return new Response(null, { status, headers });
  };
  try {
    const etag = `"${f.sha256}"`;
    const headers = new Headers(opts.headers);
    headers.set("etag", etag);
    headers.set("cache-control", opts.cacheControl ?? IMMUTABLE);
    if (f.mtime) headers.set("last-modified", f.mtime.toUTCString());
    if (isNotModified(req.headers, etag, f.mtime)) return noBody(304, headers);

    headers.set("content-type", f.contentType);
    headers.set("accept-ranges", "bytes");
    let start = 0;
    let end = f.size - 1;
    let status = 200;
    const rangeHeader = req.method === "GET" ? req.headers.get("range") : null;
    const ifRange = req.headers.get("if-range");
    if (
      rangeHeader !== null && f.size > 0 &&
      (ifRange === null || ifRangeMatches(ifRange, etag, f.mtime))
    ) {
      const range = parseRange(rangeHeader, f.size);
      if (range === "unsatisfiable") {
        headers.set("content-range", `bytes */${f.size}`);
        headers.set("content-length", "0");
        return noBody(416, headers);
      }
      if (range) {
        ({ start, end } = range);
        status = 206;
        headers.set("content-range", `bytes ${start}-${end}/${f.size}`);
      }
    }
    const length = end - start + 1;
    headers.set("content-length", String(length));
    if (req.method === "HEAD" || length === 0) return noBody(status, headers);
    const body = fileBody(
      f.file,
      start,
      length,
      socketRequests.has(req),
      (bytes, note) => finish({ status, bytes, ...(note ? { note } : {}) }),
    );
    return new Response(body, { status, headers });
  } catch (e) {
    try {
      f.file.close();
    } catch { /* closed */ }
    throw e;
  }
}

/**
 * Wraps a body stream that was not made here (an archive being downloaded)
 * so its end is reported once, and, for socket-served requests, so each
 * chunk's memory is released as soon as the server has taken it.
 */
export function trackBody(
  req: Request,
  body: ReadableStream<Uint8Array>,
  status: number,
  onFinish: (end: BodyEnd) => void,
): ReadableStream<Uint8Array> {
  const reader = body.getReader();
  const releaseChunks = socketRequests.has(req);
  let bytes = 0;
  let last: Uint8Array | undefined;
  let finished = false;
  const finish = (note?: string) => {
    if (finished) return;
    finished = true;
    onFinish({ status, bytes, ...(note ? { note } : {}) });
  };
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      if (releaseChunks) releaseChunk(last);
      last = undefined;
      try {
        const r = await reader.read();
        if (r.done) {
          controller.close();
          finish();
          return;
        }
        bytes += r.value.length;
        last = r.value;
        controller.enqueue(r.value);
      } catch (e) {
        finish(`body failed: ${(e as Error).message}`);
        controller.error(e);
      }
    },
    async cancel(reason) {
      finish("client went away");
      await reader.cancel(reason);
    },
  }, { highWaterMark: 0 });
}

/** Options of {@link serveBody}. */
export interface ServeBodyOptions {
  contentType: string;
  cacheControl: string;
  /** Strong ETag, quoted (see {@link bodyEtag}). */
  etag: string;
  /** Body size in bytes (UTF-8 for a string); computed when absent. */
  length?: number;
  headers?: Record<string, string>;
}

/**
 * A small in-memory document (metadata JSON): ETag, If-None-Match → 304 and
 * HEAD. A string body is the cheapest for Deno.serve (encoded in Rust, no
 * per-request buffer copy), and plain-object headers are cheaper than a
 * Headers instance: this is the hottest path of a warm mirror.
 */
export function serveBody(req: Request, body: string | Uint8Array, o: ServeBodyOptions): Response {
  const inm = req.headers.get("if-none-match");
  if (inm !== null && etagMatches(inm, o.etag)) {
    return new Response(null, {
      status: 304,
      headers: { ...o.headers, "cache-control": o.cacheControl, etag: o.etag },
    });
  }
  const length = o.length ?? (typeof body === "string" ? utf8Length(body) : body.length);
  return new Response(req.method === "HEAD" ? null : body as BodyInit, {
    status: 200,
    headers: {
      ...o.headers,
      "cache-control": o.cacheControl,
      etag: o.etag,
      "content-type": o.contentType,
      "content-length": String(length),
    },
  });
}

/** Bytes of `s` in UTF-8, without encoding it. */
export function utf8Length(s: string): number {
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) n += 1;
    else if (c < 0x800) n += 2;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
      const d = s.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        n += 4;
        i++;
      } else n += 3;
    } else n += 3;
  }
  return n;
}

/**
 * A strong ETag for a small in-memory body: two 32-bit FNV-1a lanes (64 bits)
 * over its code units, plus the length. It only has to change when the body
 * changes; a cryptographic hash would cost more for nothing (the bodies are
 * ours, so nobody is trying to collide them).
 */
export function bodyEtag(body: string | Uint8Array): string {
  let a = 0x811c9dc5;
  let b = 0x050c5d1f;
  const text = typeof body === "string";
  for (let i = 0; i < body.length; i++) {
    const c = text ? body.charCodeAt(i) : body[i]!;
    a = Math.imul(a ^ c, 0x01000193);
    b = Math.imul(b ^ c, 0x5bd1e995);
  }
  const hex = (x: number) => (x >>> 0).toString(16).padStart(8, "0");
  return `"${hex(a)}${hex(b)}-${body.length.toString(16)}"`;
}
