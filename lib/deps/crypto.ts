/**
 * Incremental hashing. WebCrypto's digest needs the whole buffer; archives are
 * streamed, so we use `node:crypto` which hashes chunk by chunk.
 * @module
 */
export { createHash, type Hash } from "node:crypto";
