/**
 * Every rule that decides whether Repoxy trusts upstream bytes, each a named
 * check, in the way Terraform's `internal/getproviders/package_authentication.go`
 * names its checks and composes them with `PackageAuthenticationAll`:
 *
 * | check (Terraform's name)                           | here                      | applied by |
 * | -------------------------------------------------- | ------------------------- | ---------- |
 * | signature over SHA256SUMS (`signatureAuthentication`) | {@link checkSumsSignature} | upstream/metadata.ts, before SHA256SUMS is kept |
 * | SHA256SUMS is well formed                           | {@link checkSumsFormat}    | upstream/metadata.ts |
 * | the document's shasum is SHA256SUMS' line (`matchingChecksumAuthentication`) | {@link checkMatchingChecksum} | upstream/metadata.ts, before any download |
 * | the bytes hash to it (`archiveHashAuthentication`)  | {@link checkArchiveHash}   | cache/download.ts, at the last byte (also for a pass-through) |
 * | listed `zh:`/`h1:` hashes (`packageHashAuthentication`) | {@link checkListedZh}, {@link checkListedH1} | commands/import.ts |
 *
 * A failing check throws an {@link IntegrityError} naming what did not hold;
 * the caller refuses the release (nothing is stored) and says why.
 * @module
 */
import { parseSha256Sums } from "../protocol/sha256sums.ts";
import { span } from "../base/trace.ts";
import { SignatureError, type SignerIdentity, verifyDetachedSignature } from "./signature.ts";

/** A trust rule did not hold. */
export class IntegrityError extends Error {
  override name = "IntegrityError";
}

/** What the signature check needs. */
export interface SignedSums {
  /** The registry hostname the release came from. */
  hostname: string;
  /** SHA256SUMS bytes exactly as served. */
  sums: Uint8Array;
  /** The detached signature, when the upstream named one. */
  signature: Uint8Array | undefined;
  /** `signing_keys` the upstream offered (armored). */
  offeredKeys: string[];
  /** Keys the operator pinned for this upstream (they replace the offered ones). */
  trustedKeys: string[];
}

/**
 * OpenTofu skips the signature check for its own registry when it lists no
 * keys; Repoxy accepts exactly that case, and nothing else, unsigned.
 */
export function mayBeUnsigned(
  hostname: string,
  offeredKeys: string[],
  trustedKeys: string[],
): boolean {
  return offeredKeys.length === 0 && trustedKeys.length === 0 &&
    hostname === "registry.opentofu.org";
}

/**
 * SHA256SUMS carries a valid signature by an acceptable key (see
 * signature.ts for what "acceptable" means).
 *
 * @returns the signer, or undefined for the one accepted unsigned case
 * @throws {IntegrityError}
 */
export async function checkSumsSignature(s: SignedSums): Promise<SignerIdentity | undefined> {
  if (mayBeUnsigned(s.hostname, s.offeredKeys, s.trustedKeys)) return undefined;
  if (!s.signature) throw new IntegrityError("the upstream names no signature for it");
  const end = span("signature check", { bytes: s.sums.length });
  try {
    return await verifyDetachedSignature({
      data: s.sums,
      signature: s.signature,
      armoredKeys: s.offeredKeys,
      trustedKeys: s.trustedKeys,
    });
  } catch (e) {
    if (e instanceof SignatureError) throw new IntegrityError(e.message);
    throw e;
  } finally {
    end();
  }
}

/**
 * SHA256SUMS parses (one `<sha256>  <filename>` per line, no name twice with
 * different digests).
 *
 * @returns filename → lowercase hex sha256
 * @throws {IntegrityError}
 */
export function checkSumsFormat(sums: Uint8Array): Map<string, string> {
  try {
    return parseSha256Sums(new TextDecoder().decode(sums));
  } catch (e) {
    throw new IntegrityError((e as Error).message);
  }
}

/**
 * The download document's `shasum` is the one the signed SHA256SUMS lists
 * for its `filename`.
 *
 * @throws {IntegrityError}
 */
export function checkMatchingChecksum(
  sums: Map<string, string>,
  filename: string,
  shasum: string,
): void {
  const listed = sums.get(filename);
  if (!listed) throw new IntegrityError(`SHA256SUMS has no line for ${filename}`);
  if (listed !== shasum.toLowerCase()) {
    throw new IntegrityError(
      `the download document's shasum ${shasum} differs from SHA256SUMS (${listed})`,
    );
  }
}

/**
 * The bytes received hash to the expected sha256.
 *
 * @throws {IntegrityError}
 */
export function checkArchiveHash(gotSha256: string, expectedSha256: string): void {
  const want = expectedSha256.toLowerCase();
  if (gotSha256 !== want) {
    throw new IntegrityError(
      `does not match the upstream checksum (expected sha256 ${want}, got ${gotSha256})`,
    );
  }
}

/**
 * An archive's sha256 is one of the `zh:` entries a mirror listing gives for
 * it (when it lists any).
 *
 * @throws {IntegrityError}
 */
export function checkListedZh(sha256: string, listed: string[], where: string): void {
  const zh = listed.filter((h) => h.startsWith("zh:")).map((h) => h.slice(3).toLowerCase());
  if (zh.length > 0 && !zh.includes(sha256)) {
    throw new IntegrityError(`its sha256 ${sha256} is not the zh: that ${where} lists`);
  }
}

/**
 * An archive's contents hash (`h1:`) is one of the `h1:` entries a mirror
 * listing gives for it (when it lists any).
 *
 * @throws {IntegrityError}
 */
export function checkListedH1(h1: string, listed: string[], where: string): void {
  const h1s = listed.filter((h) => h.startsWith("h1:"));
  if (h1s.length > 0 && !h1s.includes(h1)) {
    throw new IntegrityError(`its contents hash to ${h1}, not the h1: that ${where} lists`);
  }
}
