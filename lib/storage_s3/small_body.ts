/**
 * Reading a small answer body (a refs document, a lease) from the bucket,
 * bounded in bytes and in time whatever the bucket says: a `Content-Length`
 * that lies, a body larger than any document, or one that stalls mid-stream
 * costs at most `maxBytes` of memory and `idleMs` of waiting per chunk.
 * @module
 */
import { S3Error } from "./s3_error.ts";

/**
 * The body of `res` whole, or undefined when it is (or announces being)
 * larger than `maxBytes` (the body is then cancelled). Throws an
 * {@link S3Error} (status 0) when the body fails or sends nothing for
 * `idleMs`; `method` and `where` name the request in that message.
 */
export async function readSmallBody(
  res: Response,
  maxBytes: number,
  idleMs: number,
  where: string,
  method = "GET",
): Promise<Uint8Array | undefined> {
  const len = Number(res.headers.get("content-length") ?? "NaN");
  if (len > maxBytes || !res.body) {
    await res.body?.cancel().catch(() => {});
    return res.body ? undefined : new Uint8Array();
  }
  const reader = res.body.getReader();
  let buf = new Uint8Array(Number.isFinite(len) ? len : Math.min(maxBytes, 64 * 1024));
  let n = 0;
  try {
    while (true) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const stalled = new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new S3Error(`${method} ${where}: sent nothing for ${idleMs} ms`, 0)),
          idleMs,
        );
      });
      let r: ReadableStreamReadResult<Uint8Array>;
      try {
        r = await Promise.race([reader.read(), stalled]);
      } finally {
        clearTimeout(timer);
      }
      if (r.done) break;
      const chunk = r.value;
      if (n + chunk.length > maxBytes) {
        await reader.cancel().catch(() => {});
        return undefined;
      }
      if (n + chunk.length > buf.length) {
        const bigger = new Uint8Array(
          Math.min(maxBytes, Math.max(buf.length * 2, n + chunk.length)),
        );
        bigger.set(buf.subarray(0, n));
        buf = bigger;
      }
      buf.set(chunk, n);
      n += chunk.length;
    }
  } catch (e) {
    await reader.cancel().catch(() => {});
    if (e instanceof S3Error) throw e;
    throw new S3Error(`${method} ${where}: ${(e as Error).message}`, 0);
  }
  return buf.subarray(0, n);
}
