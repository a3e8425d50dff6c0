/**
 * Verification of the detached OpenPGP signature that registries publish over a
 * provider release's SHA256SUMS. It lets the mirror refuse archives whose
 * checksums the provider's author did not sign, the same way `terraform init`
 * would.
 * @module
 */

import { loadOpenpgp, type OpenPgp } from "../deps/openpgp.ts";

type PublicKey = OpenPgp.PublicKey;
type SignaturePacket = OpenPgp.SignaturePacket;

/**
 * Starts loading OpenPGP without waiting, for a caller about to fetch what it
 * will verify: the import (~120–160 ms of the first check after a start) then
 * overlaps those fetches. Never throws; a failed load surfaces in
 * {@link verifyDetachedSignature}.
 */
export function prepareSignatureCheck(): void {
  loadOpenpgp().catch(() => {});
}

/** Any failure to establish that SHA256SUMS was signed by an acceptable key. */
export class SignatureError extends Error {
  override readonly name = "SignatureError";

  /** `options.cause` carries the underlying OpenPGP error, when there is one. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
  }
}

/** Who signed SHA256SUMS: the primary key of the certificate that verified. */
export interface SignerIdentity {
  /** 16 upper-case hex digits, as in the registry protocol's `key_id`. */
  keyId: string;
  /** 40 (v4) or 64 (v6) upper-case hex digits. */
  fingerprint: string;
}

/** Input of {@link verifyDetachedSignature}. */
export interface VerifyDetachedSignatureOptions {
  /** The SHA256SUMS bytes exactly as the registry served them. */
  data: Uint8Array;
  /** The detached signature, binary (as registries serve `.sig`) or ASCII-armored. */
  signature: Uint8Array;
  /** `signing_keys.gpg_public_keys[].ascii_armor` from the upstream download document. */
  armoredKeys: string[];
  /** Armored public keys pinned by the operator; when non-empty they replace `armoredKeys`. */
  trustedKeys?: string[];
}

/**
 * Verifies a detached OpenPGP signature over `data`.
 *
 * Without pinning, the signature must verify with one of the upstream-offered
 * `armoredKeys`, which is what Terraform itself accepts. Every offered key must
 * parse; like Terraform, a malformed key is an error rather than skipped.
 *
 * With a non-empty `trustedKeys`, the signature is verified against the pinned
 * keys alone and `armoredKeys` is not consulted at all. Requiring the signer to
 * also appear in the upstream list would add nothing: whoever controls that
 * list can always include a pinned key, and it is the pinned key that must
 * have made the signature. The consequence is that a new signing subkey the
 * author publishes later is only accepted once the operator updates the pin.
 *
 * Key expiry is ignored, because Terraform ignores it (its Go verifier reports
 * an expired key and Terraform discards that error). openpgp.js would judge
 * the key's validity at the signature's creation time, which still rejects
 * signatures made after the key expired, so the key is validated with time
 * checks off instead. Everything else still applies: the signing (sub)key must
 * be properly bound to its primary key, be allowed to sign, not be revoked and
 * not be newer than the signature; and the signature itself must not be
 * dated in the future, be expired, or use a hash algorithm openpgp.js rejects
 * (MD5, RIPEMD-160, SHA-1).
 *
 * @returns The primary key ID and fingerprint of the certificate that verified.
 * @throws {SignatureError} If anything is unparseable or nothing verifies.
 */
export async function verifyDetachedSignature(
  opts: VerifyDetachedSignatureOptions,
): Promise<SignerIdentity> {
  const trusted = opts.trustedKeys ?? [];
  const pinned = trusted.length > 0;
  const armored = pinned ? trusted : opts.armoredKeys;
  if (armored.length === 0) throw new SignatureError("No signing keys offered by the upstream");
  const source = pinned ? "pinned by the operator" : "offered by the upstream";
  const describeKeys = `${armored.length} ${pinned ? "trusted " : ""}signing keys ${source}`;

  // Checked before any key is parsed. Parsing alone cost ~6 s of CPU for
  // an 8 MiB .sig of 44,000 packets.
  if (opts.signature.length > MAX_SIGNATURE_BYTES) {
    throw new SignatureError(
      `Signature of SHA256SUMS is ${opts.signature.length} bytes; at most ${MAX_SIGNATURE_BYTES} are accepted`,
    );
  }
  if (!pinned && armored.length > MAX_OFFERED_KEYS) {
    throw new SignatureError(
      `The upstream offers ${armored.length} signing keys; at most ${MAX_OFFERED_KEYS} are accepted`,
    );
  }
  // Loaded here, after the cheap refusals: only a verification needs it.
  const openpgp = await loadOpenpgp();
  const keys: PublicKey[] = [];
  for (const [i, text] of armored.entries()) {
    const which = `${pinned ? "trusted " : ""}signing key ${i + 1} of ${armored.length} ${source}`;
    try {
      keys.push(...await openpgp.readKeys({ armoredKeys: text }));
    } catch (err) {
      throw new SignatureError(`Cannot parse ${which}: ${reason(err)}`, { cause: err });
    }
    // Finding the signing key verifies self-signatures: a key offered with
    // 2,000 user IDs cost 1.3 s of CPU per SHA256SUMS, and 8 MiB of them ~17 s.
    if (!pinned) {
      const sigs = keys.reduce((n, k) => n + selfSignatureCount(k), 0);
      if (sigs > MAX_KEY_SIGNATURES) {
        throw new SignatureError(
          `The upstream's signing keys carry ${sigs} self-signatures; at most ${MAX_KEY_SIGNATURES} are accepted`,
        );
      }
    }
  }

  const signatures = await readSignaturePackets(openpgp, opts.signature);
  // The literal packet only carries the bytes: detached v4/v6 signatures do not
  // hash its filename or date, so the defaults are harmless.
  const message = await openpgp.createMessage({ binary: opts.data });
  const literal = message.packets.findPacket(openpgp.enums.packet.literalData);
  if (literal === undefined) throw new Error("openpgp.createMessage made no literal data packet");

  const failures: string[] = [];
  let attempts = 0;
  // Only the first few packets are looked at: Go's CheckDetachedSignature
  // (Terraform) checks just the first one whose issuer it knows, and a
  // hostile .sig of 44,000 bad packets (8 MiB) cost ~20 s of CPU and a
  // 2.5 MB error text.
  for (const sig of signatures.slice(0, MAX_SIGNATURE_PACKETS)) {
    const issuer = sig.issuerKeyID.toHex().toUpperCase();
    let issuerKnown = false;
    // Every key holding the issuer ID is tried, not just the first, so a key
    // that merely collides on the 64-bit ID cannot shadow the real signer.
    for (const key of keys) {
      if (key.getKeys(sig.issuerKeyID).length === 0) continue;
      issuerKnown = true;
      // The same key offered thousands of times must not mean as many checks.
      if (++attempts > MAX_SIGNATURE_PACKETS) break;
      try {
        await verifyWithKey(openpgp, sig, key, literal);
        return {
          keyId: key.getKeyID().toHex().toUpperCase(),
          fingerprint: key.getFingerprint().toUpperCase(),
        };
      } catch (err) {
        failures.push(`key ID ${issuer}: ${reason(err)}`);
      }
    }
    if (!issuerKnown) failures.push(`made by key ID ${issuer}, which none of them contains`);
  }
  const skipped = signatures.length > MAX_SIGNATURE_PACKETS
    ? `; ${signatures.length - MAX_SIGNATURE_PACKETS} more signatures not examined`
    : "";
  throw new SignatureError(
    `Signature of SHA256SUMS does not verify with any of the ${describeKeys} (${
      failures.join("; ")
    }${skipped})`,
  );
}

/**
 * Signature packets examined, and verifications tried, per SHA256SUMS.sig
 * (real ones hold one signature, rarely two).
 */
const MAX_SIGNATURE_PACKETS = 8;
/**
 * Self-signatures (user ID certifications, subkey bindings, direct and
 * revocation signatures) across the keys an upstream offers: real keys have
 * a handful.
 */
const MAX_KEY_SIGNATURES = 128;

/** The signatures openpgp may verify to pick a key's signing key. */
function selfSignatureCount(key: PublicKey): number {
  // directSignatures is missing from openpgp's type declarations.
  const direct = (key as unknown as { directSignatures?: unknown[] }).directSignatures ?? [];
  let n = direct.length + key.revocationSignatures.length;
  for (const u of key.users) n += 1 + u.selfCertifications.length + u.revocationSignatures.length;
  for (const s of key.subkeys) n += 1 + s.bindingSignatures.length + s.revocationSignatures.length;
  return n;
}

/** Largest SHA256SUMS.sig read (real ones are under 1 KiB, armored or not). */
export const MAX_SIGNATURE_BYTES = 64 * 1024;
/** `signing_keys` entries an upstream may offer (real documents list one or two). */
const MAX_OFFERED_KEYS = 64;

async function verifyWithKey(
  openpgp: typeof OpenPgp,
  sig: SignaturePacket,
  key: PublicKey,
  literal: object,
): Promise<void> {
  const type = sig.signatureType;
  // Only document signatures count; a certification or revocation signature
  // from the same key must not pass for a signature over SHA256SUMS.
  if (type !== openpgp.enums.signature.binary && type !== openpgp.enums.signature.text) {
    throw new Error(`Signature type ${type} is not a document signature`);
  }
  // A null date switches off every time check (expiry of the key, its
  // self-signatures and its binding signatures) while keeping the structural
  // ones: binding and back-signatures, signing capability, revocation.
  const signingKey = await key.getSigningKey(sig.issuerKeyID, null);
  if (sig.created === null) throw new Error("Signature has no creation time");
  if (signingKey.getCreationTime() > sig.created) {
    throw new Error("Signing key is newer than the signature");
  }
  await sig.verify(signingKey.keyPacket, type, literal, new Date(), true);
}

async function readSignaturePackets(
  openpgp: typeof OpenPgp,
  bytes: Uint8Array,
): Promise<SignaturePacket[]> {
  let signature: OpenPgp.Signature;
  try {
    // Every binary OpenPGP packet header has its top bit set; armor is ASCII.
    signature = bytes.length > 0 && (bytes[0]! & 0x80) !== 0
      ? await openpgp.readSignature({ binarySignature: bytes })
      : await openpgp.readSignature({
        armoredSignature: new TextDecoder("utf-8", { fatal: true }).decode(bytes),
      });
  } catch (err) {
    throw new SignatureError(`Cannot parse signature of SHA256SUMS: ${reason(err)}`, {
      cause: err,
    });
  }
  const packets = signature.packets.filterByTag(openpgp.enums.packet.signature);
  if (packets.length === 0) {
    throw new SignatureError("Signature of SHA256SUMS contains no signature packets");
  }
  return [...packets];
}

function reason(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
