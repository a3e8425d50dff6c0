/**
 * A pass-through that verifies: an upstream body streamed to a client while
 * being hashed, with the last chunk held back until the sha256 matched (used
 * when the cache cannot be written: the client still never receives a
 * complete archive that failed the check).
 * @module
 */
import { createHash } from "../deps/crypto.ts";
import { checkArchiveHash, IntegrityError } from "./checks.ts";

/**
 * Wraps `body` so it errors instead of completing when its bytes do not hash
 * to `expectedSha256`.
 *
 * @param onMismatch turns the failed check into the error the reader sees
 */
export function verifyingStream(
  body: ReadableStream<Uint8Array>,
  expectedSha256: string,
  onMismatch: (e: IntegrityError) => Error = (e) => e,
): ReadableStream<Uint8Array> {
  const reader = body.getReader();
  const hash = createHash("sha256");
  let pending: Uint8Array | undefined;
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      while (true) {
        const { value, done } = await reader.read();
        if (done) {
          try {
            checkArchiveHash(hash.digest("hex"), expectedSha256);
          } catch (e) {
            controller.error(e instanceof IntegrityError ? onMismatch(e) : e);
            return;
          }
          if (pending) controller.enqueue(pending);
          controller.close();
          return;
        }
        hash.update(value);
        const out = pending;
        pending = value;
        if (out) {
          controller.enqueue(out);
          return;
        }
      }
    },
    cancel: (reason) => reader.cancel(reason),
  }, { highWaterMark: 0 });
}
