/**
 * An upstream body cut at a size bound: refused at once by its
 * Content-Length, and errored the moment more bytes than allowed arrive, so
 * an endless or oversized archive costs at most the bound.
 * @module
 */
import { UpstreamError } from "../http/errors.ts";

/** The body of `res`, erroring past `maxBytes`. */
export function boundedBody(
  res: Response,
  maxBytes: number,
  what: string,
): ReadableStream<Uint8Array> {
  const tooBig = () => new UpstreamError(`${what} is over the limit of ${maxBytes} bytes`);
  const declared = Number(res.headers.get("content-length") ?? "NaN");
  if (declared > maxBytes || !res.body) {
    res.body?.cancel().catch(() => {});
    if (!res.body) return new ReadableStream({ start: (c) => c.close() });
    throw tooBig();
  }
  let seen = 0;
  return res.body.pipeThrough(
    new TransformStream<Uint8Array, Uint8Array>({
      transform(chunk, c) {
        seen += chunk.length;
        if (seen > maxBytes) c.error(tooBig());
        else c.enqueue(chunk);
      },
    }),
  );
}
