/**
 * Raw deflate for zip entries, with Go's notion of where the data ends.
 *
 * Go's `archive/zip` reads a deflated entry through `compress/flate`, which
 * stops at the final block: bytes after it, still inside the entry's
 * compressed size, are never read, and Terraform hashes such an archive.
 * WebCrypto's DecompressionStream instead fails on them ("junk after end of
 * compressed data") and loses the output of the chunk that held them, so
 * node:zlib's inflater does the work: it ends at the final block as Go does
 * (tests/zip_go_oracle_test.ts, case deflated-bytes-after-stream). Its output
 * comes in chunks of at most {@link OUTPUT_CHUNK} bytes, and input is written
 * only when the output side has been read, so a zip bomb cannot build up
 * buffers.
 *
 * node:zlib is imported when the first entry is read: loading it costs about
 * 1 MiB of RSS, which a server answering from its cache never needs. The
 * specifier is a static string, so `deno compile` embeds it.
 * @module
 */
import type * as Zlib from "node:zlib";

/** The parts of node:zlib the zip reader uses. */
export type ZlibModule = Pick<typeof Zlib, "crc32" | "createInflateRaw">;

let zlibModule: Promise<ZlibModule> | undefined;

/** What ends a wait for "drain": the inflater ended, failed or was destroyed meanwhile. */
const EVENTS = ["drain", "end", "close", "error"];

/** node:zlib, imported on the first call; a failed import is retried on the next. */
export function loadZlib(): Promise<ZlibModule> {
  zlibModule ??= import("node:zlib").catch((err) => {
    zlibModule = undefined;
    throw err;
  });
  return zlibModule;
}

/** Largest output chunk: bounds any one buffer, whatever the compression ratio. */
export const OUTPUT_CHUNK = 64 * 1024;

/**
 * Compressed input is written in slices this big. The inflater turns one
 * write into all of its output before it looks at the consumer, and deflate
 * expands up to ~1032x, so this bounds what one write can buffer to about
 * 16 MiB even for a zip bomb.
 */
export const INPUT_SLICE = 16 * 1024;

/** The inflater rejected its input; `message` is zlib's. */
export class InflateError extends Error {
  override name = "InflateError";
}

/** Uncompressed bytes pulled one chunk at a time. */
export interface Inflation {
  /** The next non-empty chunk, or null once the deflate stream has ended. */
  next(): Promise<Uint8Array | null>;
  /** Stops reading and releases the inflater; safe to call more than once. */
  dispose(): Promise<void>;
}

/**
 * Inflates the raw deflate stream that `read` yields (null when the entry's
 * compressed bytes are exhausted). Input is read only as output is pulled,
 * and not at all after the stream's final block.
 * @throws {InflateError} from `next` when the data is not valid deflate or ends early
 */
export function inflate(
  zlib: ZlibModule,
  read: () => Promise<Uint8Array | null>,
): Inflation {
  const inflater = zlib.createInflateRaw({ chunkSize: OUTPUT_CHUNK });
  let finished = false;
  const done = () => {
    finished = true;
  };
  inflater.once("end", done);
  inflater.once("close", done);
  inflater.once("error", done);
  const output = inflater[Symbol.asyncIterator]() as AsyncIterator<Uint8Array>;
  /** Resolves once the inflater wants more input, or will never want any. */
  const settled = () =>
    new Promise<void>((resolve) => {
      const go = () => {
        for (const e of EVENTS) inflater.off(e, go);
        resolve();
      };
      for (const e of EVENTS) inflater.once(e, go);
    });
  // Feeds compressed bytes while the inflater has room, waiting for "drain"
  // (the consumer reading output) otherwise.
  const pump = (async () => {
    try {
      while (!finished) {
        const chunk = await read();
        if (chunk === null) break;
        for (let i = 0; i < chunk.length && !finished; i += INPUT_SLICE) {
          if (!inflater.write(chunk.subarray(i, i + INPUT_SLICE))) await settled();
        }
      }
      if (!finished) inflater.end();
    } catch (err) {
      // A disk error surfaces on the output side.
      inflater.destroy(err as Error);
    }
  })();
  return {
    async next() {
      for (;;) {
        let result: IteratorResult<Uint8Array>;
        try {
          result = await output.next();
        } catch (err) {
          const e = err as Error & { code?: string };
          if (typeof e.code === "string" && e.code.startsWith("Z_")) {
            throw new InflateError(e.message, { cause: err });
          }
          throw err;
        }
        if (result.done) {
          await pump;
          return null;
        }
        if (result.value.length > 0) return result.value;
      }
    },
    async dispose() {
      finished = true;
      inflater.destroy();
      await pump;
    },
  };
}
