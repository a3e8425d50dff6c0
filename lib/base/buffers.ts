/**
 * Prompt release of large byte chunks.
 *
 * Every chunk that streams through JavaScript (archive reads, upstream
 * download bodies, zip entries being hashed) is a fresh ArrayBuffer, and V8
 * frees those only in a GC that external-memory pressure triggers late, after
 * about 64 MB of garbage. Streaming hundreds of MB that way kept RSS tens of MB
 * above need. Detaching a chunk's buffer once we are done with it frees the
 * memory at once (Deno's socket writer keeps its own reference to a chunk it
 * still has to send, so detaching never pulls bytes from under it).
 * @module
 */

/**
 * Detaches `chunk`'s buffer so its memory is freed now. Only for chunks whose
 * bytes nothing else will read again; views into part of a larger buffer are
 * left alone (others may share it).
 */
export function releaseChunk(chunk: Uint8Array | undefined): void {
  if (!chunk || chunk.byteOffset !== 0 || chunk.buffer.byteLength !== chunk.byteLength) return;
  try {
    (chunk.buffer as ArrayBuffer).transfer(0);
  } catch { /* not detachable (e.g. shared): the GC frees it */ }
}
