/**
 * OpenPGP (detached signature verification of SHA256SUMS), loaded when first
 * needed. openpgp.js is the largest module Repoxy uses: importing it adds
 * ~25 MiB to the RSS of a process that never verifies a signature (a server
 * answering from its cache, most subcommands). One loader so the pinned version
 * lives in deno.json and the import in this one place; the specifier is a
 * static string, so `deno compile` still embeds the package.
 * @module
 */
import type * as OpenPgp from "openpgp";

/** The openpgp.js namespace, for type positions (`OpenPgp.PublicKey`). */
export type { OpenPgp };

let loading: Promise<typeof OpenPgp> | undefined;

/**
 * The openpgp.js module, imported on the first call and shared afterwards.
 * A failed import is not cached, so a later call tries again.
 */
export function loadOpenpgp(): Promise<typeof OpenPgp> {
  loading ??= import("openpgp").catch((err) => {
    loading = undefined;
    throw err;
  });
  return loading;
}
