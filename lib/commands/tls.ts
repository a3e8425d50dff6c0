/**
 * `repoxy tls init`: a local CA and a server certificate for
 * localhost/127.0.0.1/::1 in `<cacheDir>/tls/`, so the network mirror protocol
 * (HTTPS only) works on a laptop.
 *
 * The CA carries X.509 name constraints for exactly those names: trusting it
 * does not let anyone who copies its key impersonate any other site. Existing
 * files are kept (the CA is trusted by hand, so replacing it silently would
 * break clients); the server certificate is reissued when missing, not from
 * this CA, or within 30 days of expiry. `--force` starts over.
 * @module
 */
import {
  type Command,
  COMMON_HELP,
  defineCommand,
  EXIT_FAILED,
  EXIT_OK,
  flagBool,
  usageError,
} from "./cli.ts";
import type { Config } from "../config/config.ts";
import { join } from "../deps/path.ts";
import {
  fromPem,
  generateKey,
  importKey,
  type KeyMaterial,
  makeCertificate,
  readCertificate,
  toPem,
} from "./x509.ts";

/** The names the certificate is for. */
export const LOCAL_NAMES = ["localhost", "127.0.0.1", "::1"];

const DAY = 86_400_000;
/** Ten years: the CA is trusted by hand, once. */
const CA_DAYS = 3650;
/** Apple refuses TLS server certificates valid for longer than 825 days. */
const SERVER_DAYS = 825;
const RENEW_BEFORE_DAYS = 30;

/** Where `tls init` writes, and what it did. */
export interface TlsFiles {
  dir: string;
  caCert: string;
  caKey: string;
  cert: string;
  key: string;
  /** System roots plus the CA, for SSL_CERT_FILE (Linux); undefined if no system bundle was found. */
  bundle: string | undefined;
  caCreated: boolean;
  certIssued: boolean;
  certNotAfter: Date;
}

/** An existing CA that cannot be used (a file missing, or key and certificate do not match). */
export class TlsStateError extends Error {
  override name = "TlsStateError";
}

/** Where Go (Terraform, OpenTofu) looks for the system roots on Linux, in its order. */
const SYSTEM_BUNDLES = [
  "/etc/ssl/certs/ca-certificates.crt",
  "/etc/pki/tls/certs/ca-bundle.crt",
  "/etc/ssl/ca-bundle.pem",
  "/etc/pki/tls/cacert.pem",
  "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
  "/etc/ssl/cert.pem",
];

async function readIfExists(path: string): Promise<string | undefined> {
  try {
    return await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return undefined;
    throw e;
  }
}

/** Writes a file with the given mode, replacing it via rename. */
async function writeFile(path: string, text: string, mode: number): Promise<void> {
  const tmp = `${path}.tmp-${Deno.pid}`;
  await Deno.writeTextFile(tmp, text, { mode });
  await Deno.chmod(tmp, mode).catch(() => {}); // mode is masked by umask; keys must be 0600
  await Deno.rename(tmp, path);
}

function equal(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/**
 * Creates (or keeps) the CA and server certificate under `<cacheDir>/tls`.
 *
 * @throws {TlsStateError} when existing files cannot be used without `force`
 */
export async function tlsInit(
  cacheDir: string,
  opts: { force?: boolean; now?: () => number } = {},
): Promise<TlsFiles> {
  const now = opts.now ?? Date.now;
  const dir = join(cacheDir, "tls");
  await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
  const files = {
    caCert: join(dir, "ca.pem"),
    caKey: join(dir, "ca.key"),
    cert: join(dir, "server.pem"),
    key: join(dir, "server.key"),
  };
  if (opts.force) {
    for (const f of Object.values(files)) await Deno.remove(f).catch(() => {});
  }
  const notBefore = new Date(now() - 3_600_000); // tolerate clocks a little behind

  // The CA: keep a usable one, make one when there is none.
  let ca: { key: KeyMaterial; certDer: Uint8Array };
  let caCreated = false;
  const [caCertPem, caKeyPem] = [await readIfExists(files.caCert), await readIfExists(files.caKey)];
  if (caCertPem !== undefined || caKeyPem !== undefined) {
    if (caCertPem === undefined || caKeyPem === undefined) {
      throw new TlsStateError(
        `${dir} has ${
          caCertPem ? "ca.pem but no ca.key" : "ca.key but no ca.pem"
        }; rerun with --force to make a new CA (and trust it again)`,
      );
    }
    try {
      const key = await importKey(fromPem("PRIVATE KEY", caKeyPem));
      const certDer = fromPem("CERTIFICATE", caCertPem);
      if (!equal(readCertificate(certDer).spki, key.spki)) {
        throw new Error("ca.key does not belong to ca.pem");
      }
      ca = { key, certDer };
    } catch (e) {
      throw new TlsStateError(
        `cannot use the existing CA in ${dir}: ${
          (e as Error).message
        }; rerun with --force to make a new one (and trust it again)`,
      );
    }
  } else {
    const key = await generateKey();
    const stamp = new Date(now()).toISOString().slice(0, 10);
    const tag = [...crypto.getRandomValues(new Uint8Array(3))].map((b) =>
      b.toString(16).padStart(2, "0")
    ).join("");
    const certDer = await makeCertificate({
      subjectCn: `Repoxy local CA ${stamp} ${tag}`,
      subject: key,
      notBefore,
      notAfter: new Date(now() + CA_DAYS * DAY),
      ca: true,
      names: LOCAL_NAMES,
    });
    // Key first: a crash in between leaves "key but no cert", which we refuse
    // to guess about, rather than a certificate whose key is lost.
    await writeFile(files.caKey, toPem("PRIVATE KEY", key.pkcs8), 0o600);
    await writeFile(files.caCert, toPem("CERTIFICATE", certDer), 0o644);
    ca = { key, certDer };
    caCreated = true;
  }
  const caInfo = readCertificate(ca.certDer);

  // The server certificate: keep it while it is this CA's, matches its key and is not expiring.
  let certIssued = false;
  let certNotAfter: Date | undefined;
  const [certPem, keyPem] = [await readIfExists(files.cert), await readIfExists(files.key)];
  if (certPem !== undefined && keyPem !== undefined) {
    try {
      const info = readCertificate(fromPem("CERTIFICATE", certPem));
      const key = await importKey(fromPem("PRIVATE KEY", keyPem));
      if (
        equal(info.issuer, caInfo.subject) && equal(info.spki, key.spki) &&
        info.notAfter.getTime() - now() > RENEW_BEFORE_DAYS * DAY
      ) certNotAfter = info.notAfter;
    } catch { /* unreadable: reissue */ }
  }
  if (!certNotAfter) {
    const key = await generateKey();
    certNotAfter = new Date(now() + SERVER_DAYS * DAY);
    const der = await makeCertificate({
      subjectCn: "localhost",
      subject: key,
      issuer: { name: caInfo.subject, key: ca.key },
      notBefore,
      notAfter: certNotAfter,
      ca: false,
      names: LOCAL_NAMES,
    });
    await writeFile(files.key, toPem("PRIVATE KEY", key.pkcs8), 0o600);
    await writeFile(files.cert, toPem("CERTIFICATE", der), 0o644);
    certIssued = true;
  }

  // A bundle of the system roots plus the CA: SSL_CERT_FILE replaces Go's
  // system roots instead of adding to them, and Terraform still needs those.
  let bundle: string | undefined;
  for (const path of SYSTEM_BUNDLES) {
    const system = await readIfExists(path).catch(() => undefined);
    if (system === undefined) continue;
    bundle = join(dir, "bundle.pem");
    const caPem = toPem("CERTIFICATE", ca.certDer);
    await writeFile(bundle, `${system.trimEnd()}\n# Repoxy local CA\n${caPem}`, 0o644);
    break;
  }
  return { dir, ...files, bundle, caCreated, certIssued, certNotAfter };
}

/** The human-readable instructions printed after `tls init`. */
export function tlsInstructions(t: TlsFiles, config: Config): string {
  const port = config.listen.port;
  const linux = t.bundle
    ? `  Linux, Terraform/OpenTofu only (system roots + this CA):
      export SSL_CERT_FILE=${t.bundle}`
    : `  Linux, Terraform/OpenTofu only (no system bundle found, so this CA alone):
      export SSL_CERT_FILE=${t.caCert}`;
  return `${t.caCreated ? "Created a local CA" : "Kept the existing local CA"} and ${
    t.certIssued ? "issued" : "kept"
  } a server certificate for ${LOCAL_NAMES.join(", ")} (valid until ${
    t.certNotAfter.toISOString().slice(0, 10)
  }).

  CA certificate (trust this):  ${t.caCert}
  server certificate:           ${t.cert}
  server key:                   ${t.key}

The CA can vouch only for ${LOCAL_NAMES.join(", ")} (X.509 name constraints), so trusting it does
not let whoever copies ${t.caKey} impersonate other sites.

Trust the CA on this machine:
${linux}
  Linux, system-wide (Debian/Ubuntu):
      sudo cp ${t.caCert} /usr/local/share/ca-certificates/repoxy-local-ca.crt
      sudo update-ca-certificates
  macOS (Go ignores SSL_CERT_FILE there; it reads the keychain):
      security add-trusted-cert -r trustRoot -k ~/Library/Keychains/login.keychain-db ${t.caCert}

Add to the Repoxy config and restart it:
  "tls": { "cert": "${t.cert}", "key": "${t.key}" }

Then point Terraform/OpenTofu at it (~/.terraformrc or ~/.tofurc):
  provider_installation {
    network_mirror { url = "https://127.0.0.1:${port}/" }
  }`;
}

const HELP = `Usage: repoxy tls init [options]

Creates a local certificate authority and a server certificate for localhost,
127.0.0.1 and ::1 in <cacheDir>/tls/ (ca.pem, ca.key, server.pem, server.key,
and bundle.pem = system roots + the CA), then prints how to trust the CA and the
config snippet. The network mirror protocol needs HTTPS; this makes it work on a
laptop without a public certificate.

Existing files are kept: the CA always (unless --force), the server certificate
while it is valid for 30 more days.

Options:
      --force            make a new CA and certificate (clients must trust it again)
${COMMON_HELP}

Exit codes: 0 ok, 1 the existing files cannot be used (see --force), 2 bad
arguments or config.`;

/** `repoxy tls`. */
export const tlsCommand: Command = defineCommand({
  name: "tls",
  summary: "tls init: make a local CA and localhost certificate for HTTPS",
  help: HELP,
  options: { force: { type: "boolean" } },
  positionals: { min: 1, max: 1, usage: 'expected "repoxy tls init"' },
  async run({ args: parsed, config, io }) {
    if (parsed.positionals[0] !== "init") {
      return usageError(io, "tls", 'expected "repoxy tls init"');
    }
    try {
      const t = await tlsInit(config.cacheDir, { force: flagBool(parsed, "force") });
      io.out(tlsInstructions(t, config));
      return EXIT_OK;
    } catch (e) {
      if (e instanceof TlsStateError) {
        io.err(`repoxy tls: ${e.message}`);
        return EXIT_FAILED;
      }
      throw e;
    }
  },
});
