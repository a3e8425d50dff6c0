/**
 * Serving archives: from an open file or stored object with conditional
 * requests (ETag, Last-Modified → 304), single byte ranges (206/416,
 * If-Range) and HEAD; and streamed bodies of downloads in progress, with
 * their end reported once for the access log.
 *
 * Archive bodies are our own pull streams with large reads: on Deno 2.9 the
 * built-in `file.readable` reads 64 KiB per blocking-pool round trip and was
 * measured at 0.6× nginx for one client (bench/RESULTS.md); 256 KiB reads are
 * on par. Larger reads buy no speed but cost memory: up to two chunks per
 * connection are alive (one being written, one read ahead), and 16 clients
 * peaked ~8 MiB higher with 512 KiB reads than with 256 KiB (bench/memory.ts).
 * When the consumer is Deno's own socket writer each chunk's buffer is
 * released as soon as the writer has taken it (see {@link markSocketRequest}
 * and base/buffers.ts). Buffers are not reused: Deno 2.9.6 keeps zero-copy
 * references to chunks it has not sent (its stream channel, hyper's write
 * queue, the h2 send buffer; over 512 KiB for HTTP/2, also over TLS without
 * ALPN) and never says when it is done, and a ring deep enough to be safe
 * measured no faster in the real server (bench/archive_ab.ts, issue 12).
 * @module
 */
import { releaseChunk } from "../base/buffers.ts";
import { ifRangeMatches, isNotModified, parseRange } from "./conditional.ts";

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
export const READ_CHUNK = 256 * 1024;

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
