/**
 * Validators and ranges (RFC 9110): ETag comparison, HTTP dates,
 * If-None-Match / If-Modified-Since (304), If-Range and single byte ranges
 * (206/416). Pure functions over header values.
 * @module
 */

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
