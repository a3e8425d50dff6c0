/**
 * What `repoxy tls init`'s certificates contain: a private CA and a TLS server
 * certificate (ECDSA P-256, SHA-256), and the few fields read back to decide
 * whether existing files can be kept.
 *
 * The encoding (DER, RFC 5280 structures, signing) is `@peculiar/x509`'s
 * (lib/deps/x509.ts) on WebCrypto; this module only says what goes in. A
 * library instead of the `openssl` CLI keeps `tls init` free of an external
 * tool (macOS ships LibreSSL with other flags, Windows ships none) and of
 * `--allow-run`.
 * @module
 */
import { x509 } from "../deps/x509.ts";
import {
  AsnConvert,
  GeneralName,
  GeneralSubtree,
  GeneralSubtrees,
  id_ce_nameConstraints,
  NameConstraints,
} from "../deps/asn1.ts";

const ALG = { name: "ECDSA", namedCurve: "P-256" } as const;
const SIGNING = { name: "ECDSA", hash: "SHA-256" } as const;

/** A key pair, with the encodings written to disk and compared. */
export interface KeyMaterial {
  privateKey: CryptoKey;
  publicKey: CryptoKey;
  /** PKCS#8 DER of the private key. */
  pkcs8: Uint8Array;
  /** SubjectPublicKeyInfo DER. */
  spki: Uint8Array;
}

/** The fields of a certificate that `tls init` looks at. */
export interface CertInfo {
  /** DER of the issuer and subject Names, for comparing. */
  issuer: Uint8Array;
  subject: Uint8Array;
  notAfter: Date;
  /** SubjectPublicKeyInfo DER, to compare with {@link KeyMaterial.spki}. */
  spki: Uint8Array;
}

/** What to put in a certificate. */
export interface CertificateSpec {
  subjectCn: string;
  /** The subject's key. */
  subject: KeyMaterial;
  /** Issuer Name DER and key; omit for a self-signed certificate. */
  issuer?: { name: Uint8Array; key: KeyMaterial };
  notBefore: Date;
  notAfter: Date;
  /** A CA certificate constrained to these names, or a server certificate for them. */
  ca: boolean;
  names: string[];
}

const bytes = (b: ArrayBuffer) => new Uint8Array(b);

/**
 * Reads a DER certificate's issuer, subject, expiry and public key.
 * @throws {Error} when it is not a certificate
 */
export function readCertificate(der: Uint8Array): CertInfo {
  const cert = new x509.X509Certificate(der as BufferSource);
  return {
    issuer: bytes(cert.issuerName.toArrayBuffer()),
    subject: bytes(cert.subjectName.toArrayBuffer()),
    notAfter: cert.notAfter,
    spki: bytes(cert.publicKey.rawData),
  };
}

/** Wraps DER as PEM with the given label ("CERTIFICATE", "PRIVATE KEY"). */
export function toPem(label: string, der: Uint8Array): string {
  return `${x509.PemConverter.encode(der as BufferSource, label).replace(/\r\n/g, "\n")}\n`;
}

/**
 * The DER inside the first PEM block with `label`.
 * @throws {Error} when there is none
 */
export function fromPem(label: string, pem: string): Uint8Array {
  const block = x509.PemConverter.decodeWithHeaders(pem).find((b) => b.type === label);
  if (!block) throw new Error(`no "${label}" PEM block`);
  return bytes(block.rawData);
}

/** Makes a new P-256 key pair. */
export async function generateKey(): Promise<KeyMaterial> {
  const pair = await crypto.subtle.generateKey(ALG, true, ["sign", "verify"]);
  return {
    ...pair,
    pkcs8: bytes(await crypto.subtle.exportKey("pkcs8", pair.privateKey)),
    spki: bytes(await crypto.subtle.exportKey("spki", pair.publicKey)),
  };
}

/**
 * Loads a PKCS#8 P-256 private key with its public half (from the JWK form,
 * which carries x and y), so it can sign and be matched against a certificate.
 * @throws {Error} when it is not a P-256 key
 */
export async function importKey(pkcs8: Uint8Array): Promise<KeyMaterial> {
  const privateKey = await crypto.subtle.importKey("pkcs8", pkcs8 as BufferSource, ALG, true, [
    "sign",
  ]);
  const { kty, crv, x, y } = await crypto.subtle.exportKey("jwk", privateKey);
  const publicKey = await crypto.subtle.importKey(
    "jwk",
    { kty: kty!, crv: crv!, x: x!, y: y! },
    ALG,
    true,
    [
      "verify",
    ],
  );
  return {
    privateKey,
    publicKey,
    pkcs8,
    spki: bytes(await crypto.subtle.exportKey("spki", publicKey)),
  };
}

/** IPv4 or IPv6 text rather than a DNS name (the library rejects malformed addresses). */
const isIp = (name: string) => /^[\d.]+$/.test(name) || name.includes(":");

/** A GeneralName for a DNS name or an IP address; with `mask`, the address covers only itself. */
function generalName(name: string, mask: boolean): GeneralName {
  if (!isIp(name)) return new GeneralName({ dNSName: name });
  return new GeneralName({ iPAddress: mask ? `${name}/${name.includes(":") ? 128 : 32}` : name });
}

/** A positive 16-byte serial number, as hex. */
function serialNumber(): string {
  const serial = crypto.getRandomValues(new Uint8Array(16));
  serial[0] = (serial[0]! & 0x7f) | 0x01;
  return [...serial].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/** Makes a DER certificate signed by the issuer (or by itself). */
export async function makeCertificate(spec: CertificateSpec): Promise<Uint8Array> {
  const signer = spec.issuer?.key ?? spec.subject;
  const subject = new x509.Name([{ O: ["Repoxy"] }, { CN: [spec.subjectCn] }]);
  const extensions: x509.Extension[] = [
    await x509.SubjectKeyIdentifierExtension.create(spec.subject.publicKey),
    await x509.AuthorityKeyIdentifierExtension.create(signer.publicKey),
  ];
  const { KeyUsageFlags: U } = x509;
  if (spec.ca) {
    extensions.push(
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(U.digitalSignature | U.keyCertSign | U.cRLSign, true),
      // permittedSubtrees: trusting this CA lets it vouch for these names only.
      new x509.Extension(
        id_ce_nameConstraints,
        true,
        AsnConvert.serialize(
          new NameConstraints({
            permittedSubtrees: new GeneralSubtrees(
              spec.names.map((n) => new GeneralSubtree({ base: generalName(n, true) })),
            ),
          }),
        ),
      ),
    );
  } else {
    extensions.push(
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(U.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
      new x509.SubjectAlternativeNameExtension(
        spec.names.map((n) => ({ type: isIp(n) ? "ip" as const : "dns" as const, value: n })),
      ),
    );
  }
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serialNumber(),
    subject,
    issuer: spec.issuer ? new x509.Name(spec.issuer.name as BufferSource) : subject,
    notBefore: spec.notBefore,
    notAfter: spec.notAfter,
    signingAlgorithm: SIGNING,
    publicKey: spec.subject.publicKey,
    signingKey: signer.privateKey,
    extensions,
  });
  return bytes(cert.rawData);
}
