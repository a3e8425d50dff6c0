/**
 * OpenPGP (detached signature verification of SHA256SUMS). One re-export so the
 * pinned version lives in deno.json and nowhere else.
 * @module
 */
export * as openpgp from "openpgp";
