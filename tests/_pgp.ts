/**
 * OpenPGP material for tests: signing keys and detached signatures shaped like
 * the ones registries publish (`SHA256SUMS.sig` is a binary detached signature).
 * @module
 */

import { loadOpenpgp } from "../lib/deps/openpgp.ts";

const openpgp = await loadOpenpgp();

/** A freshly generated signing key; the IDs are upper-case hex, like `key_id`. */
export interface TestSigningKey {
  publicKeyArmored: string;
  /** Unencrypted, so signing needs no passphrase. */
  privateKeyArmored: string;
  /** Primary key ID, 16 hex digits. */
  keyId: string;
  /** Primary key fingerprint, 40 hex digits. */
  fingerprint: string;
}

/** Optional knobs of {@link makeSigningKey}. */
export interface SigningKeyOptions {
  /** Creation time of the key and its self-signature (default: now). */
  createdAt?: Date;
  /** Seconds after `createdAt` at which the key expires (default: never). */
  expiresAfterSeconds?: number;
}

/**
 * Generates a v4 signing key in well under a second.
 *
 * The primary key is EdDSA over Ed25519 in its "legacy" v4 encoding (algorithm
 * 22), which GnuPG 2.2 and the ProtonMail go-crypto library inside Terraform
 * both verify. The newer RFC 9580 Ed25519 algorithm is avoided on purpose: older
 * GnuPG and Terraform releases do not know it. No encryption subkey is made, so
 * signatures are always issued by the primary key.
 *
 * An already-expired key: `createdAt` two days ago, `expiresAfterSeconds` one day.
 */
export async function makeSigningKey(
  name = "Repoxy Test",
  opts: SigningKeyOptions = {},
): Promise<TestSigningKey> {
  const { privateKey, publicKey } = await openpgp.generateKey({
    type: "ecc",
    curve: "ed25519Legacy",
    userIDs: [{ name, email: "signing@repoxy.test" }],
    subkeys: [],
    format: "armored",
    ...(opts.createdAt ? { date: opts.createdAt } : {}),
    ...(opts.expiresAfterSeconds ? { keyExpirationTime: opts.expiresAfterSeconds } : {}),
  });
  return {
    ...await identify(publicKey),
    publicKeyArmored: publicKey,
    privateKeyArmored: privateKey,
  };
}

/**
 * Re-issues the self-signature of `privateKeyArmored` so that the key expired
 * at `expiredAt` while keeping its key material, and hence its IDs. Signatures
 * made before with the key then postdate its expiry, which is the case openpgp.js
 * rejects by default and Terraform accepts.
 */
export async function expireSigningKey(
  privateKeyArmored: string,
  expiredAt: Date,
  name = "Repoxy Test",
): Promise<TestSigningKey> {
  const privateKey = await openpgp.readPrivateKey({ armoredKey: privateKeyArmored });
  const created = privateKey.getCreationTime();
  const lifetime = Math.floor((expiredAt.getTime() - created.getTime()) / 1000);
  if (lifetime <= 0) throw new RangeError("expiredAt must be after the key's creation time");
  const reformatted = await openpgp.reformatKey({
    privateKey,
    userIDs: [{ name, email: "signing@repoxy.test" }],
    keyExpirationTime: lifetime,
    // The new self-signature must predate the expiry, or the key was never valid.
    date: created,
    format: "armored",
  });
  return {
    ...await identify(reformatted.publicKey),
    publicKeyArmored: reformatted.publicKey,
    privateKeyArmored: reformatted.privateKey,
  };
}

/** Options of {@link signDetached} and {@link signDetachedArmored}. */
export interface SignOptions {
  /** Signature creation time (default: now); must fall in the key's validity. */
  date?: Date;
}

/** Binary detached signature over `data`, like HashiCorp's `SHA256SUMS.sig`. */
export async function signDetached(
  privateKeyArmored: string,
  data: Uint8Array,
  opts: SignOptions = {},
): Promise<Uint8Array> {
  return await openpgp.sign({
    ...await signArgs(privateKeyArmored, data, opts),
    detached: true,
    format: "binary",
  });
}

/** ASCII-armored detached signature over `data` (`-----BEGIN PGP SIGNATURE-----`). */
export async function signDetachedArmored(
  privateKeyArmored: string,
  data: Uint8Array,
  opts: SignOptions = {},
): Promise<string> {
  return await openpgp.sign({
    ...await signArgs(privateKeyArmored, data, opts),
    detached: true,
    format: "armored",
  });
}

async function signArgs(privateKeyArmored: string, data: Uint8Array, opts: SignOptions) {
  return {
    message: await openpgp.createMessage({ binary: data }),
    signingKeys: await openpgp.readPrivateKey({ armoredKey: privateKeyArmored }),
    ...(opts.date ? { date: opts.date } : {}),
  };
}

async function identify(publicKeyArmored: string): Promise<{ keyId: string; fingerprint: string }> {
  const key = await openpgp.readKey({ armoredKey: publicKeyArmored });
  return {
    keyId: key.getKeyID().toHex().toUpperCase(),
    fingerprint: key.getFingerprint().toUpperCase(),
  };
}
