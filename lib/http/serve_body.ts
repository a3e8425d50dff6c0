/**
 * Small in-memory documents (metadata JSON): served with a strong ETag,
 * If-None-Match → 304 and HEAD, at the lowest cost per request.
 * @module
 */
import { etagMatches } from "./conditional.ts";

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
