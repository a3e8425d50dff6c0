/**
 * Just enough X.509 to make a private CA and a TLS server certificate with
 * WebCrypto (ECDSA P-256, SHA-256), and to read back the few fields
 * `repoxy tls init` needs to decide whether existing files can be kept.
 *
 * WebCrypto makes and uses the keys; this module only lays out DER (ITU-T
 * X.690) for the structures of RFC 5280. Doing it here instead of calling the
 * `openssl` CLI keeps `tls init` free of an external tool (macOS ships
 * LibreSSL with other flags, Windows ships none) and of `--allow-run`.
 * @module
 */
import { createHash } from "../deps/crypto.ts";

// ---- DER writing -----------------------------------------------------------

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

function tlv(tag: number, ...content: Uint8Array[]): Uint8Array {
  const body = concat(content);
  const n = body.length;
  let len: number[];
  if (n < 0x80) len = [n];
  else {
    const bytes: number[] = [];
    for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v & 0xff);
    len = [0x80 | bytes.length, ...bytes];
  }
  return concat([Uint8Array.of(tag, ...len), body]);
}

const seq = (...c: Uint8Array[]) => tlv(0x30, ...c);
const set = (...c: Uint8Array[]) => tlv(0x31, ...c);
const octets = (b: Uint8Array) => tlv(0x04, b);
const utf8 = (s: string) => tlv(0x0c, new TextEncoder().encode(s));
const bool = (v: boolean) => tlv(0x01, Uint8Array.of(v ? 0xff : 0));
/** BIT STRING whose bits are whole bytes (keys, signatures). */
const bits = (b: Uint8Array) => tlv(0x03, Uint8Array.of(0), b);
/** [n] EXPLICIT */
const explicit = (n: number, c: Uint8Array) => tlv(0xa0 | n, c);

/** A positive INTEGER from big-endian bytes. */
function uint(b: Uint8Array): Uint8Array {
  let i = 0;
  while (i < b.length - 1 && b[i] === 0) i++;
  const v = b.subarray(i);
  return tlv(0x02, v[0]! & 0x80 ? concat([Uint8Array.of(0), v]) : v);
}

function oid(dotted: string): Uint8Array {
  const arcs = dotted.split(".").map(Number);
  const out: number[] = [40 * arcs[0]! + arcs[1]!];
  for (const arc of arcs.slice(2)) {
    const b: number[] = [arc & 0x7f];
    for (let v = Math.floor(arc / 128); v > 0; v = Math.floor(v / 128)) {
      b.unshift(0x80 | (v & 0x7f));
    }
    out.push(...b);
  }
  return tlv(0x06, Uint8Array.from(out));
}

/** UTCTime through 2049, GeneralizedTime after, as RFC 5280 4.1.2.5 requires. */
function time(d: Date): Uint8Array {
  const iso = d.toISOString(); // YYYY-MM-DDTHH:MM:SS.sssZ
  const digits = iso.slice(0, 19).replace(/[-:T]/g, "") + "Z";
  const year = d.getUTCFullYear();
  return year < 2050
    ? tlv(0x17, new TextEncoder().encode(digits.slice(2)))
    : tlv(0x18, new TextEncoder().encode(digits));
}

const OID = {
  ecdsaWithSha256: "1.2.840.10045.4.3.2",
  commonName: "2.5.4.3",
  organization: "2.5.4.10",
  subjectKeyId: "2.5.29.14",
  keyUsage: "2.5.29.15",
  subjectAltName: "2.5.29.17",
  basicConstraints: "2.5.29.19",
  nameConstraints: "2.5.29.30",
  authorityKeyId: "2.5.29.35",
  extKeyUsage: "2.5.29.37",
  serverAuth: "1.3.6.1.5.5.7.3.1",
};

function name(cn: string): Uint8Array {
  return seq(
    set(seq(oid(OID.organization), utf8("Repoxy"))),
    set(seq(oid(OID.commonName), utf8(cn))),
  );
}

function extension(id: string, critical: boolean, value: Uint8Array): Uint8Array {
  return critical ? seq(oid(id), bool(true), octets(value)) : seq(oid(id), octets(value));
}

/** A GeneralName for a DNS name or an IP address (RFC 5280 4.2.1.6). */
function generalName(n: string, withMask: boolean): Uint8Array {
  const ip = parseIp(n);
  if (!ip) return tlv(0x82, new TextEncoder().encode(n)); // [2] dNSName
  // [7] iPAddress; in name constraints, address followed by a full mask.
  return tlv(0x87, withMask ? concat([ip, new Uint8Array(ip.length).fill(0xff)]) : ip);
}

/** IPv4 or IPv6 text to bytes; undefined for anything else (a DNS name). */
export function parseIp(s: string): Uint8Array | undefined {
  const v4 = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(s);
  if (v4) {
    const b = v4.slice(1).map(Number);
    return b.every((x) => x <= 255) ? Uint8Array.from(b) : undefined;
  }
  if (!s.includes(":") || !/^[0-9a-fA-F:]+$/.test(s)) return undefined;
  const [head, tail, extra] = s.split("::");
  if (extra !== undefined) return undefined;
  const h = head ? head.split(":") : [];
  const t = tail !== undefined && tail !== "" ? tail.split(":") : [];
  const fill = tail === undefined ? 0 : 8 - h.length - t.length;
  if (fill < 0 || (tail === undefined && h.length !== 8)) return undefined;
  const groups = [...h, ...Array(fill).fill("0"), ...t];
  if (groups.some((g) => g.length === 0 || g.length > 4)) return undefined;
  const out = new Uint8Array(16);
  groups.forEach((g, i) => {
    const v = parseInt(g, 16);
    out[2 * i] = v >> 8;
    out[2 * i + 1] = v & 0xff;
  });
  return out;
}

// ---- DER reading -----------------------------------------------------------

interface Node {
  tag: number;
  /** Whole TLV. */
  raw: Uint8Array;
  /** Contents only. */
  value: Uint8Array;
}

function read(buf: Uint8Array, at = 0): Node & { end: number } {
  const tag = buf[at];
  let len = buf[at + 1];
  if (tag === undefined || len === undefined) throw new Error("truncated DER");
  let off = at + 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n === 0 || n > 4) throw new Error("unsupported DER length");
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + buf[off + i]!;
    off += n;
  }
  const end = off + len;
  if (end > buf.length) throw new Error("truncated DER");
  return { tag, raw: buf.subarray(at, end), value: buf.subarray(off, end), end };
}

function children(n: Node): Node[] {
  const out: Node[] = [];
  for (let at = 0; at < n.value.length;) {
    const c = read(n.value, at);
    out.push(c);
    at = c.end;
  }
  return out;
}

function readTime(n: Node): Date {
  const s = new TextDecoder().decode(n.value);
  const m = n.tag === 0x17
    ? /^(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)Z$/.exec(s)
    : /^(\d\d\d\d)(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)Z$/.exec(s);
  if (!m) throw new Error(`unsupported certificate time "${s}"`);
  let year = Number(m[1]);
  if (n.tag === 0x17) year += year < 50 ? 2000 : 1900;
  return new Date(
    Date.UTC(year, Number(m[2]) - 1, Number(m[3]), Number(m[4]), Number(m[5]), Number(m[6])),
  );
}

/** The fields of a certificate that `tls init` looks at. */
export interface CertInfo {
  /** DER of the issuer and subject Names, for comparing. */
  issuer: Uint8Array;
  subject: Uint8Array;
  notAfter: Date;
  /** The subject public key (for P-256: the uncompressed point). */
  publicKey: Uint8Array;
}

/**
 * Reads a DER certificate's issuer, subject, expiry and public key.
 * @throws {Error} when it is not a certificate this module understands
 */
export function readCertificate(der: Uint8Array): CertInfo {
  const cert = read(der);
  const tbs = children(cert)[0];
  if (cert.tag !== 0x30 || !tbs || tbs.tag !== 0x30) throw new Error("not a certificate");
  const f = children(tbs);
  const off = f[0]?.tag === 0xa0 ? 1 : 0; // optional version
  const [, , issuer, validity, subject, spki] = f.slice(off);
  if (!issuer || !validity || !subject || !spki) throw new Error("truncated certificate");
  const key = children(spki)[1];
  if (!key || key.tag !== 0x03) throw new Error("certificate has no public key");
  return {
    issuer: issuer.raw,
    subject: subject.raw,
    notAfter: readTime(children(validity)[1]!),
    publicKey: key.value.subarray(1),
  };
}

// ---- PEM -------------------------------------------------------------------

/** Wraps DER as PEM with the given label ("CERTIFICATE", "PRIVATE KEY"). */
export function toPem(label: string, der: Uint8Array): string {
  let b64 = "";
  for (let i = 0; i < der.length; i += 0x8000) {
    b64 += String.fromCharCode(...der.subarray(i, i + 0x8000));
  }
  b64 = btoa(b64);
  const lines = b64.match(/.{1,64}/g) ?? [];
  return `-----BEGIN ${label}-----\n${lines.join("\n")}\n-----END ${label}-----\n`;
}

/** The DER inside the first PEM block with `label`. */
export function fromPem(label: string, pem: string): Uint8Array {
  const m = new RegExp(`-----BEGIN ${label}-----([^-]+)-----END ${label}-----`).exec(pem);
  if (!m) throw new Error(`no "${label}" PEM block`);
  return Uint8Array.from(atob(m[1]!.replace(/\s+/g, "")), (c) => c.charCodeAt(0));
}

// ---- certificates ----------------------------------------------------------

const ALG = { name: "ECDSA", namedCurve: "P-256" } as const;

/** A key pair with its raw public point (what certificates and key ids use). */
export interface KeyMaterial {
  privateKey: CryptoKey;
  /** PKCS#8 DER of the private key. */
  pkcs8: Uint8Array;
  /** SubjectPublicKeyInfo DER. */
  spki: Uint8Array;
  /** Uncompressed public point. */
  publicKey: Uint8Array;
}

/** Makes a new P-256 key pair. */
export async function generateKey(): Promise<KeyMaterial> {
  const pair = await crypto.subtle.generateKey(ALG, true, ["sign", "verify"]);
  return {
    privateKey: pair.privateKey,
    pkcs8: new Uint8Array(await crypto.subtle.exportKey("pkcs8", pair.privateKey)),
    spki: new Uint8Array(await crypto.subtle.exportKey("spki", pair.publicKey)),
    publicKey: new Uint8Array(await crypto.subtle.exportKey("raw", pair.publicKey)),
  };
}

/**
 * Loads a PKCS#8 P-256 private key, with its public point (from the JWK form,
 * which carries x and y) so it can be matched against a certificate.
 */
export async function importKey(pkcs8: Uint8Array): Promise<KeyMaterial> {
  const extractable = await crypto.subtle.importKey(
    "pkcs8",
    pkcs8 as BufferSource,
    ALG,
    true,
    ["sign"],
  );
  const jwk = await crypto.subtle.exportKey("jwk", extractable);
  const b64url = (s: string) =>
    Uint8Array.from(atob(s.replace(/-/g, "+").replace(/_/g, "/")), (c) => c.charCodeAt(0));
  const publicKey = concat([Uint8Array.of(4), b64url(jwk.x!), b64url(jwk.y!)]);
  const pub = await crypto.subtle.importKey(
    "jwk",
    { kty: jwk.kty!, crv: jwk.crv!, x: jwk.x!, y: jwk.y! },
    ALG,
    true,
    ["verify"],
  );
  return {
    privateKey: extractable,
    pkcs8,
    spki: new Uint8Array(await crypto.subtle.exportKey("spki", pub)),
    publicKey,
  };
}

/** Key identifier: SHA-1 of the public key bits (RFC 5280 4.2.1.2, method 1). */
function keyId(publicKey: Uint8Array): Uint8Array {
  return new Uint8Array(createHash("sha1").update(publicKey).digest());
}

/** WebCrypto's ECDSA signature is r||s; X.509 wants SEQUENCE { INTEGER r, INTEGER s }. */
function derSignature(raw: Uint8Array): Uint8Array {
  const half = raw.length / 2;
  return seq(uint(raw.subarray(0, half)), uint(raw.subarray(half)));
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

/** Makes a DER certificate signed by the issuer (or by itself). */
export async function makeCertificate(spec: CertificateSpec): Promise<Uint8Array> {
  const subjectName = name(spec.subjectCn);
  const issuerName = spec.issuer?.name ?? subjectName;
  const signer = spec.issuer?.key ?? spec.subject;
  const serial = crypto.getRandomValues(new Uint8Array(16));
  serial[0] = (serial[0]! & 0x7f) | 0x01; // positive and 16 bytes long
  const sigAlg = seq(oid(OID.ecdsaWithSha256));
  const exts = [
    extension(OID.subjectKeyId, false, octets(keyId(spec.subject.publicKey))),
    extension(OID.authorityKeyId, false, seq(tlv(0x80, keyId(signer.publicKey)))),
  ];
  if (spec.ca) {
    exts.push(
      extension(OID.basicConstraints, true, seq(bool(true), uint(Uint8Array.of(0)))),
      // digitalSignature, keyCertSign, cRLSign
      extension(OID.keyUsage, true, tlv(0x03, Uint8Array.of(1, 0x86))),
      // permittedSubtrees: trusting this CA lets it vouch for these names only.
      extension(
        OID.nameConstraints,
        true,
        seq(tlv(0xa0, ...spec.names.map((n) => seq(generalName(n, true))))),
      ),
    );
  } else {
    exts.push(
      extension(OID.basicConstraints, true, seq()),
      // digitalSignature
      extension(OID.keyUsage, true, tlv(0x03, Uint8Array.of(7, 0x80))),
      extension(OID.extKeyUsage, false, seq(oid(OID.serverAuth))),
      extension(OID.subjectAltName, false, seq(...spec.names.map((n) => generalName(n, false)))),
    );
  }
  const tbs = seq(
    explicit(0, uint(Uint8Array.of(2))), // v3
    uint(serial),
    sigAlg,
    issuerName,
    seq(time(spec.notBefore), time(spec.notAfter)),
    subjectName,
    spec.subject.spki,
    explicit(3, seq(...exts)),
  );
  const sig = new Uint8Array(
    await crypto.subtle.sign(
      { name: "ECDSA", hash: "SHA-256" },
      signer.privateKey,
      tbs as BufferSource,
    ),
  );
  return seq(tbs, sigAlg, bits(derSignature(sig)));
}
