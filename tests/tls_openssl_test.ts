/**
 * `repoxy tls init`'s certificates as a second, independent X.509
 * implementation sees them: OpenSSL parses both, prints the extensions the
 * CA and the server certificate must carry, and verifies the chain strictly
 * for the local names only. (Terraform's Go verifier trusting the CA is
 * tests/airgap_test.ts; rustls, Deno's, is tests/tls_init_test.ts.)
 * @module
 */
import { tlsInit } from "../lib/commands/tls.ts";
import {
  fromPem,
  generateKey,
  importKey,
  makeCertificate,
  readCertificate,
  toPem,
} from "../lib/commands/x509.ts";
import { assert, assertEquals, assertMatch } from "../lib/deps/assert.ts";
import { join } from "../lib/deps/path.ts";
import { tempDir } from "./_helpers.ts";

const DAY = 86_400_000;

async function haveOpenssl(): Promise<boolean> {
  try {
    return (await new Deno.Command("openssl", { args: ["version"], stdout: "null" }).output())
      .success;
  } catch {
    return false;
  }
}
const OPENSSL = await haveOpenssl();
// deno-lint-ignore no-console
if (!OPENSSL) console.log("SKIP: the openssl CLI is not installed (tls_openssl_test)");

/** Runs openssl; its exit code and stdout+stderr. */
async function openssl(args: string[]): Promise<{ code: number; out: string }> {
  const o = await new Deno.Command("openssl", { args, stdin: "null" }).output();
  const dec = new TextDecoder();
  return { code: o.code, out: dec.decode(o.stdout) + dec.decode(o.stderr) };
}

/** One field of `openssl x509 -noout -<field>`, e.g. "enddate" → the date. */
async function field(pem: string, name: string): Promise<string> {
  const r = await openssl(["x509", "-noout", `-${name}`, "-in", pem]);
  assertEquals(r.code, 0, r.out);
  return r.out.trim().replace(/^[^=]*=/, "");
}

/** The lines of an extension in `openssl x509 -text`, with its "critical" mark. */
function extension(text: string, title: string): string {
  const m = new RegExp(`X509v3 ${title}:( critical)? *\\n((?: {16}.*\\n)+)`).exec(text);
  assert(m, `no ${title} in\n${text}`);
  return `${m[1] ? "critical " : ""}${m[2]!.trim().split(/\n\s*/).join(" | ")}`;
}

Deno.test({
  name:
    "openssl reads the CA and server certificate of tls init and verifies the chain for the local names only",
  ignore: !OPENSSL,
  async fn() {
    await using dir = await tempDir();
    const now = Math.floor(Date.now() / 1000) * 1000; // certificates keep whole seconds
    const t = await tlsInit(dir.path, { now: () => now });

    const ca = (await openssl(["x509", "-noout", "-text", "-in", t.caCert])).out;
    assertMatch(ca, /Version: 3 \(0x2\)/);
    assertMatch(ca, /Signature Algorithm: ecdsa-with-SHA256/);
    assertMatch(ca, /ASN1 OID: prime256v1/);
    assertMatch(
      await field(t.caCert, "subject"),
      /^O = Repoxy, CN = Repoxy local CA \d{4}-\d\d-\d\d [0-9a-f]{6}$/,
    );
    assertEquals(await field(t.caCert, "issuer"), await field(t.caCert, "subject"));
    assertEquals(extension(ca, "Basic Constraints"), "critical CA:TRUE, pathlen:0");
    assertEquals(
      extension(ca, "Key Usage"),
      "critical Digital Signature, Certificate Sign, CRL Sign",
    );
    assertEquals(
      extension(ca, "Name Constraints"),
      "critical Permitted: | DNS:localhost | IP:127.0.0.1/255.255.255.255 | " +
        "IP:0:0:0:0:0:0:0:1/FFFF:FFFF:FFFF:FFFF:FFFF:FFFF:FFFF:FFFF",
    );
    assert(!ca.includes("Subject Alternative Name"), "the CA names no host");
    assertEquals(Date.parse(await field(t.caCert, "startdate")), now - 3_600_000);
    assertEquals(Date.parse(await field(t.caCert, "enddate")), now + 3650 * DAY);

    const leaf = (await openssl(["x509", "-noout", "-text", "-in", t.cert])).out;
    assertEquals(await field(t.cert, "subject"), "O = Repoxy, CN = localhost");
    assertEquals(await field(t.cert, "issuer"), await field(t.caCert, "subject"));
    assertEquals(extension(leaf, "Basic Constraints"), "critical CA:FALSE");
    assertEquals(extension(leaf, "Key Usage"), "critical Digital Signature");
    assertEquals(extension(leaf, "Extended Key Usage"), "TLS Web Server Authentication");
    assertEquals(
      extension(leaf, "Subject Alternative Name"),
      "DNS:localhost, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1",
    );
    // The leaf's authority key id is the CA's subject key id.
    assertEquals(
      extension(leaf, "Authority Key Identifier").replace(/^keyid:/, ""),
      extension(ca, "Subject Key Identifier"),
    );
    assertEquals(Date.parse(await field(t.cert, "enddate")), now + 825 * DAY);
    // A positive serial of 16 random bytes (RFC 5280 4.1.2.2: at most 20): the first byte is
    // 0x01-0x7f, so openssl prints 32 hex digits starting 00 never, 0-7 always.
    assertMatch(await field(t.cert, "serial"), /^(?!00)[0-7][0-9A-F]{31}$/);
    assert(await field(t.cert, "serial") !== await field(t.caCert, "serial"));

    // The key files are the certificates' keys.
    for (const [cert, key] of [[t.caCert, t.caKey], [t.cert, t.key]]) {
      const fromKey = await openssl(["pkey", "-in", key!, "-pubout"]);
      const fromCert = await openssl(["x509", "-noout", "-pubkey", "-in", cert!]);
      assertEquals(fromKey.out, fromCert.out, `${key} belongs to ${cert}`);
    }

    const verify = (...args: string[]) =>
      openssl(["verify", "-x509_strict", "-purpose", "sslserver", "-CAfile", t.caCert, ...args]);
    for (
      const check of [["-verify_hostname", "localhost"], ["-verify_ip", "127.0.0.1"], [
        "-verify_ip",
        "::1",
      ]]
    ) {
      const r = await verify(...check, t.cert);
      assertEquals([r.code, r.out.trim()], [0, `${t.cert}: OK`], check.join(" "));
    }
    const other = await verify("-verify_hostname", "bank.example", t.cert);
    assertEquals(other.code, 2);
    assertMatch(other.out, /hostname mismatch/);

    // A certificate the CA's key signs for another site fails the CA's name constraints.
    const caKey = await importKey(fromPem("PRIVATE KEY", await Deno.readTextFile(t.caKey)));
    const issuer = {
      name: readCertificate(fromPem("CERTIFICATE", await Deno.readTextFile(t.caCert))).subject,
      key: caKey,
    };
    const rogue = join(dir.path, "rogue.pem");
    const key = await generateKey();
    await Deno.writeTextFile(
      rogue,
      toPem(
        "CERTIFICATE",
        await makeCertificate({
          subjectCn: "bank.example",
          subject: key,
          issuer,
          notBefore: new Date(now - DAY),
          notAfter: new Date(now + DAY),
          ca: false,
          names: ["bank.example"],
        }),
      ),
    );
    const refused = await verify("-verify_hostname", "bank.example", rogue);
    assertEquals(refused.code, 2);
    assertMatch(refused.out, /permitted subtree violation/);
  },
});
