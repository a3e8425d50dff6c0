import { SignatureError, verifyDetachedSignature } from "../lib/integrity/signature.ts";
import { parseSha256Sums } from "../lib/protocol/sha256sums.ts";
import { loadOpenpgp } from "../lib/deps/openpgp.ts";
import {
  assert,
  assertEquals,
  assertMatch,
  assertRejects,
  assertThrows,
} from "../lib/deps/assert.ts";
import {
  expireSigningKey,
  makeSigningKey,
  signDetached,
  signDetachedArmored,
  type TestSigningKey,
} from "./_pgp.ts";

const openpgp = await loadOpenpgp();

const DAY_MS = 86_400_000;
const SUMS = new TextEncoder().encode(
  "5f1c3e7b9d2a4c6e8f0a1b3c5d7e9f1a2b4c6d8e0f1a3b5c7d9e1f2a4b6c8d0e  " +
    "terraform-provider-demo_1.0.0_linux_amd64.zip\n",
);

let sharedKey: Promise<TestSigningKey> | undefined;
/** Key generation is cheap, but most tests only need one honest signer. */
function honestKey(): Promise<TestSigningKey> {
  return sharedKey ??= makeSigningKey("Honest Author");
}

async function rejectsWithSignatureError(
  promise: Promise<unknown>,
  message: RegExp,
): Promise<void> {
  await assertRejects(promise, (err: unknown) => {
    assert(err instanceof SignatureError, `expected SignatureError, got ${err}`);
    assertEquals(err.name, "SignatureError");
    assertMatch(err.message, message);
    return true;
  });
}

Deno.test("verifyDetachedSignature accepts a binary signature by an offered key", async () => {
  const key = await honestKey();
  const signature = await signDetached(key.privateKeyArmored, SUMS);
  // What registries serve as .sig: a raw packet, not armor.
  assert((signature[0]! & 0x80) !== 0);
  const signer = await verifyDetachedSignature({
    data: SUMS,
    signature,
    armoredKeys: [key.publicKeyArmored],
  });
  assertEquals(signer, { keyId: key.keyId, fingerprint: key.fingerprint });
  assertMatch(signer.keyId, /^[0-9A-F]{16}$/);
  assertMatch(signer.fingerprint, /^[0-9A-F]{40}$/);
});

Deno.test("verifyDetachedSignature accepts an ASCII-armored signature", async () => {
  const key = await honestKey();
  const armored = await signDetachedArmored(key.privateKeyArmored, SUMS);
  assertMatch(armored, /^-----BEGIN PGP SIGNATURE-----/);
  const signer = await verifyDetachedSignature({
    data: SUMS,
    signature: new TextEncoder().encode(armored),
    armoredKeys: [key.publicKeyArmored],
  });
  assertEquals(signer.fingerprint, key.fingerprint);
});

Deno.test("verifyDetachedSignature finds the signer among several offered keys", async () => {
  const [key, other] = [await honestKey(), await makeSigningKey("Other")];
  const signature = await signDetached(key.privateKeyArmored, SUMS);
  const signer = await verifyDetachedSignature({
    data: SUMS,
    signature,
    armoredKeys: [other.publicKeyArmored, key.publicKeyArmored],
  });
  assertEquals(signer.keyId, key.keyId);
});

Deno.test("verifyDetachedSignature accepts a signing subkey and reports its primary key", async () => {
  const { privateKey, publicKey } = await openpgp.generateKey({
    type: "ecc",
    curve: "ed25519Legacy",
    userIDs: [{ name: "Subkey Signer" }],
    subkeys: [{ sign: true }],
  });
  const primary = await openpgp.readKey({ armoredKey: publicKey });
  const signature = await signDetached(privateKey, SUMS);
  const issuer = (await openpgp.readSignature({ binarySignature: signature })).getSigningKeyIDs();
  assert(!issuer[0]!.equals(primary.getKeyID()), "expected openpgp.js to sign with the subkey");
  const signer = await verifyDetachedSignature({
    data: SUMS,
    signature,
    armoredKeys: [publicKey],
  });
  assertEquals(signer.fingerprint, primary.getFingerprint().toUpperCase());
});

Deno.test("verifyDetachedSignature rejects a signature by a key that was not offered", async () => {
  const [key, stranger] = [await honestKey(), await makeSigningKey("Stranger")];
  const signature = await signDetached(stranger.privateKeyArmored, SUMS);
  await rejectsWithSignatureError(
    verifyDetachedSignature({ data: SUMS, signature, armoredKeys: [key.publicKeyArmored] }),
    new RegExp(
      `^Signature of SHA256SUMS does not verify with any of the 1 signing keys offered by the ` +
        `upstream \\(made by key ID ${stranger.keyId}, which none of them contains\\)$`,
    ),
  );
});

Deno.test("verifyDetachedSignature rejects tampered data", async () => {
  const key = await honestKey();
  const signature = await signDetached(key.privateKeyArmored, SUMS);
  const tampered = SUMS.slice();
  tampered[0] = tampered[0]! ^ 1;
  await rejectsWithSignatureError(
    verifyDetachedSignature({ data: tampered, signature, armoredKeys: [key.publicKeyArmored] }),
    new RegExp(`does not verify with any of the 1 signing keys .*key ID ${key.keyId}: `),
  );
});

Deno.test("verifyDetachedSignature rejects a tampered signature", async () => {
  const key = await honestKey();
  const signature = await signDetached(key.privateKeyArmored, SUMS);
  signature[signature.length - 3] = signature[signature.length - 3]! ^ 0x55;
  await rejectsWithSignatureError(
    verifyDetachedSignature({ data: SUMS, signature, armoredKeys: [key.publicKeyArmored] }),
    /SHA256SUMS/,
  );
});

Deno.test("verifyDetachedSignature rejects when the upstream offers no keys", async () => {
  const key = await honestKey();
  const signature = await signDetached(key.privateKeyArmored, SUMS);
  await rejectsWithSignatureError(
    verifyDetachedSignature({ data: SUMS, signature, armoredKeys: [] }),
    /^No signing keys offered by the upstream$/,
  );
  await rejectsWithSignatureError(
    verifyDetachedSignature({ data: SUMS, signature, armoredKeys: [], trustedKeys: [] }),
    /^No signing keys offered by the upstream$/,
  );
});

Deno.test("verifyDetachedSignature rejects an unparseable key, even next to a good one", async () => {
  const key = await honestKey();
  const signature = await signDetached(key.privateKeyArmored, SUMS);
  for (
    const garbage of [
      "not a key at all",
      "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nAAAA\n-----END PGP PUBLIC KEY BLOCK-----\n",
      "",
    ]
  ) {
    await rejectsWithSignatureError(
      verifyDetachedSignature({
        data: SUMS,
        signature,
        armoredKeys: [key.publicKeyArmored, garbage],
      }),
      /^Cannot parse signing key 2 of 2 offered by the upstream: ./,
    );
  }
});

Deno.test("verifyDetachedSignature rejects an unparseable signature", async () => {
  const key = await honestKey();
  for (
    const signature of [
      new Uint8Array(),
      new TextEncoder().encode("hello"),
      new Uint8Array([0x88, 0x01, 0x02]),
    ]
  ) {
    await rejectsWithSignatureError(
      verifyDetachedSignature({ data: SUMS, signature, armoredKeys: [key.publicKeyArmored] }),
      /^(Cannot parse signature of SHA256SUMS: .|Signature of SHA256SUMS contains no signature)/,
    );
  }
});

Deno.test("verifyDetachedSignature with trustedKeys ignores an unpinned upstream key", async () => {
  const [pinned, intruder] = [await honestKey(), await makeSigningKey("Intruder")];
  const signature = await signDetached(intruder.privateKeyArmored, SUMS);
  // A compromised upstream offering its own key next to the real one.
  await rejectsWithSignatureError(
    verifyDetachedSignature({
      data: SUMS,
      signature,
      armoredKeys: [pinned.publicKeyArmored, intruder.publicKeyArmored],
      trustedKeys: [pinned.publicKeyArmored],
    }),
    new RegExp(
      `^Signature of SHA256SUMS does not verify with any of the 1 trusted signing keys pinned by ` +
        `the operator \\(made by key ID ${intruder.keyId}, which none of them contains\\)$`,
    ),
  );
});

Deno.test("verifyDetachedSignature with trustedKeys accepts the pinned signer", async () => {
  const [pinned, other] = [await honestKey(), await makeSigningKey("Other")];
  const signature = await signDetached(pinned.privateKeyArmored, SUMS);
  const signer = await verifyDetachedSignature({
    data: SUMS,
    signature,
    armoredKeys: [pinned.publicKeyArmored],
    trustedKeys: [other.publicKeyArmored, pinned.publicKeyArmored],
  });
  assertEquals(signer, { keyId: pinned.keyId, fingerprint: pinned.fingerprint });
  // The pinned key decides alone; what the upstream offers does not matter.
  assertEquals(
    await verifyDetachedSignature({
      data: SUMS,
      signature,
      armoredKeys: ["garbage"],
      trustedKeys: [pinned.publicKeyArmored],
    }),
    signer,
  );
});

Deno.test("verifyDetachedSignature rejects an unparseable pinned key", async () => {
  const key = await honestKey();
  const signature = await signDetached(key.privateKeyArmored, SUMS);
  await rejectsWithSignatureError(
    verifyDetachedSignature({
      data: SUMS,
      signature,
      armoredKeys: [key.publicKeyArmored],
      trustedKeys: ["garbage"],
    }),
    /^Cannot parse trusted signing key 1 of 1 pinned by the operator: ./,
  );
});

Deno.test("verifyDetachedSignature accepts a key that expired after signing", async () => {
  const now = Date.now();
  const key = await makeSigningKey("Expired", {
    createdAt: new Date(now - 3 * DAY_MS),
    expiresAfterSeconds: 2 * 86_400,
  });
  const signature = await signDetached(key.privateKeyArmored, SUMS, {
    date: new Date(now - 2 * DAY_MS),
  });
  const expiry = await (await openpgp.readKey({ armoredKey: key.publicKeyArmored }))
    .getExpirationTime();
  assert(expiry instanceof Date && expiry.getTime() < now, "the test key should have expired");
  const signer = await verifyDetachedSignature({
    data: SUMS,
    signature,
    armoredKeys: [key.publicKeyArmored],
  });
  assertEquals(signer.fingerprint, key.fingerprint);
});

Deno.test("verifyDetachedSignature accepts a signature made after the key expired", async () => {
  const now = Date.now();
  const original = await makeSigningKey("Expired", { createdAt: new Date(now - 3 * DAY_MS) });
  const signature = await signDetached(original.privateKeyArmored, SUMS);
  const expired = await expireSigningKey(original.privateKeyArmored, new Date(now - DAY_MS));
  assertEquals(expired.fingerprint, original.fingerprint);
  // openpgp.js alone refuses this; Terraform accepts it, so the mirror must too.
  const strict = await openpgp.verify({
    message: await openpgp.createMessage({ binary: SUMS }),
    signature: await openpgp.readSignature({ binarySignature: signature }),
    verificationKeys: await openpgp.readKey({ armoredKey: expired.publicKeyArmored }),
  });
  await assertRejects(strict.signatures[0]!.verified, /expired/);

  const signer = await verifyDetachedSignature({
    data: SUMS,
    signature,
    armoredKeys: [expired.publicKeyArmored],
    trustedKeys: [expired.publicKeyArmored],
  });
  assertEquals(signer.fingerprint, original.fingerprint);
});

Deno.test("verifyDetachedSignature rejects a revoked key", async () => {
  const key = await makeSigningKey("Revoked");
  const signature = await signDetached(key.privateKeyArmored, SUMS);
  const { publicKey: revoked } = await openpgp.revokeKey({
    key: await openpgp.readPrivateKey({ armoredKey: key.privateKeyArmored }),
    reasonForRevocation: { flag: openpgp.enums.reasonForRevocation.keyCompromised },
  });
  await rejectsWithSignatureError(
    verifyDetachedSignature({ data: SUMS, signature, armoredKeys: [revoked] }),
    /revoked/,
  );
});

Deno.test("verifyDetachedSignature rejects a signature dated in the future", async () => {
  const key = await makeSigningKey("Future", { createdAt: new Date(Date.now() - DAY_MS) });
  const signature = await signDetached(key.privateKeyArmored, SUMS, {
    date: new Date(Date.now() + DAY_MS),
  });
  await rejectsWithSignatureError(
    verifyDetachedSignature({ data: SUMS, signature, armoredKeys: [key.publicKeyArmored] }),
    /future/,
  );
});

Deno.test("parseSha256Sums reads sha256sum output", () => {
  const a = "A".repeat(64);
  const b = "0123456789abcdef".repeat(4);
  const c = "f".repeat(64);
  const sums = parseSha256Sums(
    `${a}  provider_1.0.0_linux_amd64.zip\r\n\n   \n${b} *provider_1.0.0_darwin_arm64.zip\n` +
      `${c} provider_1.0.0_manifest.json`,
  );
  assertEquals(
    sums,
    new Map([
      ["provider_1.0.0_linux_amd64.zip", "a".repeat(64)],
      ["provider_1.0.0_darwin_arm64.zip", b],
      ["provider_1.0.0_manifest.json", c],
    ]),
  );
  assertEquals(parseSha256Sums(""), new Map());
  // A name may itself contain spaces; only the separator is special.
  assertEquals(parseSha256Sums(`${c}  my file.zip\n`).get("my file.zip"), c);
});

Deno.test("parseSha256Sums names the line of malformed input", () => {
  const good = `${"a".repeat(64)}  ok.zip`;
  for (
    const [text, line] of [
      [`${good}\n${"a".repeat(63)}  short.zip\n`, 2],
      [`${good}\n\n${"g".repeat(64)}  nothex.zip`, 3],
      [`${"a".repeat(64)}\n`, 1],
      [`${"a".repeat(64)}   \n`, 1],
      [`${"a".repeat(64)}\tname.zip`, 1],
      [`SHA256 (ok.zip) = ${"a".repeat(64)}`, 1],
      [`${good}\n${"b".repeat(64)}  ok.zip\n`, 2],
    ] as const
  ) {
    assertThrows(() => parseSha256Sums(text), (err: unknown) => {
      assert(err instanceof TypeError, `expected TypeError, got ${err}`);
      assertMatch(err.message, new RegExp(`^Line ${line} of SHA256SUMS `));
      return true;
    });
  }
  // The same entry twice is redundant, not ambiguous.
  assertEquals(parseSha256Sums(`${good}\n${good}\n`).size, 1);
});
