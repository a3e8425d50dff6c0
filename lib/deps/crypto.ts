/**
 * Incremental hashing. WebCrypto's digest needs the whole buffer; archives are
 * streamed, so we use `node:crypto` which hashes chunk by chunk. HMAC and the
 * constant-time comparison (client auth, signed URLs) are synchronous there too.
 * @module
 */
export { createHash, createHmac, type Hash, randomBytes, timingSafeEqual } from "node:crypto";
