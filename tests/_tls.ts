/**
 * Throwaway TLS material for tests: a private CA and a server certificate for
 * 127.0.0.1 / localhost that it signed. Terraform only talks to registries over
 * HTTPS, so end-to-end tests serve with this certificate and point Terraform's
 * Go TLS stack at the CA with `SSL_CERT_FILE`.
 *
 * Made with the `openssl` CLI: WebCrypto can make keys but not certificates,
 * and a hand-rolled X.509 encoder is more to trust than the real tool.
 * @module
 */

import { join } from "../lib/deps/path.ts";

/** Paths of the PEM files written into the directory, and their contents. */
export interface TestTls {
  /** Self-signed CA certificate: the trust anchor for clients. */
  caCertPath: string;
  /** Server certificate (leaf only; the CA is the trust anchor, not a chain link). */
  certPath: string;
  /** Unencrypted PKCS#8 private key of the server certificate. */
  keyPath: string;
  caCertPem: string;
  certPem: string;
  keyPem: string;
}

// A config of our own keeps the distribution's openssl.cnf defaults (and their
// possible duplicate extensions) out of the certificates.
const CA_CONFIG = `[req]
distinguished_name = dn
prompt = no
x509_extensions = ca_ext
[dn]
CN = Repoxy Test CA
[ca_ext]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
`;

const SERVER_CONFIG = `[req]
distinguished_name = dn
prompt = no
[dn]
CN = localhost
[server_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer
`;

/** Long enough for any test run; short so a leaked CA is worthless soon. */
const VALID_DAYS = "2";

async function openssl(cwd: string, args: string[]): Promise<void> {
  let output: Deno.CommandOutput;
  try {
    output = await new Deno.Command("openssl", { args, cwd, stdin: "null" }).output();
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) {
      throw new Error("The openssl CLI is needed to make test TLS certificates but is not on PATH");
    }
    throw err;
  }
  if (!output.success) {
    const stderr = new TextDecoder().decode(output.stderr).trim();
    throw new Error(`openssl ${args[0]} failed (exit code ${output.code}): ${stderr}`);
  }
}

/** A positive 128-bit serial: Go rejects negative serials and RFC 5280 caps them at 20 bytes. */
function randomSerial(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[0] = (bytes[0]! & 0x7f) | 0x10;
  return "0x" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * Writes `ca.pem`, `ca.key`, `server.pem` and `server.key` (EC P-256) into
 * `dir`, which must exist. The server certificate carries subjectAltName
 * `IP:127.0.0.1, DNS:localhost` and the serverAuth extended key usage, which Go
 * requires; both certificates are valid from now for two days.
 *
 * @throws {Error} If `openssl` is not installed or fails.
 */
export async function makeTestTls(dir: string): Promise<TestTls> {
  const caCertPath = join(dir, "ca.pem");
  const caKeyPath = join(dir, "ca.key");
  const certPath = join(dir, "server.pem");
  const keyPath = join(dir, "server.key");
  const csrPath = join(dir, "server.csr");
  const caConfigPath = join(dir, "ca.cnf");
  const serverConfigPath = join(dir, "server.cnf");
  await Deno.mkdir(dir, { recursive: true });
  await Deno.writeTextFile(caConfigPath, CA_CONFIG);
  await Deno.writeTextFile(serverConfigPath, SERVER_CONFIG);

  const ecKey = ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"];
  await openssl(dir, ["genpkey", ...ecKey, "-out", caKeyPath]);
  await openssl(dir, ["genpkey", ...ecKey, "-out", keyPath]);
  await openssl(dir, [
    "req",
    "-x509",
    "-config",
    caConfigPath,
    "-key",
    caKeyPath,
    "-sha256",
    "-days",
    VALID_DAYS,
    "-set_serial",
    randomSerial(),
    "-out",
    caCertPath,
  ]);
  await openssl(dir, [
    "req",
    "-new",
    "-config",
    serverConfigPath,
    "-key",
    keyPath,
    "-out",
    csrPath,
  ]);
  await openssl(dir, [
    "x509",
    "-req",
    "-in",
    csrPath,
    "-CA",
    caCertPath,
    "-CAkey",
    caKeyPath,
    "-set_serial",
    randomSerial(),
    "-sha256",
    "-days",
    VALID_DAYS,
    "-extfile",
    serverConfigPath,
    "-extensions",
    "server_ext",
    "-out",
    certPath,
  ]);
  await Deno.remove(csrPath);

  return {
    caCertPath,
    certPath,
    keyPath,
    caCertPem: await Deno.readTextFile(caCertPath),
    certPem: await Deno.readTextFile(certPath),
    keyPem: await Deno.readTextFile(keyPath),
  };
}
