/**
 * `repoxy tls init`: a CA and server certificate that Repoxy serves with and
 * clients trust, kept on re-runs, constrained to local names.
 */
import { createApp, serveApp } from "../lib/app.ts";
import { tlsCommand, tlsInit } from "../lib/commands/tls.ts";
import { buildConfig } from "../lib/config/config.ts";
import {
  assert,
  assertEquals,
  assertMatch,
  assertNotEquals,
  assertRejects,
} from "../lib/deps/assert.ts";
import { join } from "../lib/deps/path.ts";
import { memoryLogger } from "../lib/base/log.ts";
import {
  fromPem,
  generateKey,
  importKey,
  makeCertificate,
  readCertificate,
  toPem,
} from "../lib/commands/x509.ts";
import { captureIo, runCli, testContext, writeConfig } from "./_cli.ts";
import { tempDir } from "./_helpers.ts";

async function withRepoxy(cacheDir: string, fn: (port: number) => Promise<void>) {
  const tls = join(cacheDir, "tls");
  const config = await buildConfig({
    cacheDir,
    listen: "127.0.0.1:0",
    upstreams: {},
    tls: { cert: join(tls, "server.pem"), key: join(tls, "server.key") },
  });
  const app = await createApp(config, { log: memoryLogger() });
  const server = serveApp(app);
  try {
    await fn(server.port);
  } finally {
    await server.shutdown(1000);
  }
}

async function fetchStatus(url: string, caPem?: string): Promise<number> {
  const client = caPem ? Deno.createHttpClient({ caCerts: [caPem] }) : undefined;
  try {
    const res = await fetch(url, client ? { client } : {});
    await res.body?.cancel();
    return res.status;
  } finally {
    client?.close();
  }
}

Deno.test("tls init makes a CA and certificate Repoxy serves with and a client trusting the CA accepts", async () => {
  await using dir = await tempDir();
  const config = await writeConfig(dir.path, { cacheDir: "cache", listen: "127.0.0.1:8443" });
  const io = captureIo();
  assertEquals(await tlsCommand.run(["init", "-c", config], testContext(io)), 0);
  const tls = join(dir.path, "cache", "tls");
  const out = io.outLines.join("\n");
  assertMatch(
    out,
    /Created a local CA and issued a server certificate for localhost, 127\.0\.0\.1, ::1/,
  );
  assertMatch(out, new RegExp(`export SSL_CERT_FILE=${tls}/(bundle|ca)\\.pem`));
  assertMatch(out, /security add-trusted-cert -r trustRoot -k .* \S+\/ca\.pem/);
  assertMatch(
    out,
    new RegExp(`"tls": \\{ "cert": "${tls}/server\\.pem", "key": "${tls}/server\\.key" \\}`),
  );
  assertMatch(out, /network_mirror \{ url = "https:\/\/127\.0\.0\.1:8443\/" \}/);
  for (const key of ["ca.key", "server.key"]) {
    assertEquals((await Deno.stat(join(tls, key))).mode! & 0o777, 0o600, key);
  }
  const ca = await Deno.readTextFile(join(tls, "ca.pem"));

  await withRepoxy(join(dir.path, "cache"), async (port) => {
    assertEquals(await fetchStatus(`https://127.0.0.1:${port}/-/healthz`, ca), 200);
    await assertRejects(() => fetchStatus(`https://127.0.0.1:${port}/-/healthz`));
  });

  // The bundle (when the system has roots) holds them plus this CA.
  try {
    const bundle = await Deno.readTextFile(join(tls, "bundle.pem"));
    assert(bundle.endsWith(ca));
    assert(bundle.split("BEGIN CERTIFICATE").length > 2);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }

  // Idempotent: the CA and the certificate are kept.
  const cert = await Deno.readTextFile(join(tls, "server.pem"));
  const again = captureIo();
  assertEquals(await tlsCommand.run(["init", "-c", config], testContext(again)), 0);
  assertMatch(
    again.outLines.join("\n"),
    /Kept the existing local CA and kept a server certificate/,
  );
  assertEquals(await Deno.readTextFile(join(tls, "ca.pem")), ca);
  assertEquals(await Deno.readTextFile(join(tls, "server.pem")), cert);

  // --force starts over.
  assertEquals(
    await tlsCommand.run(["init", "--force", "-c", config], testContext(captureIo())),
    0,
  );
  assertNotEquals(await Deno.readTextFile(join(tls, "ca.pem")), ca);
});

Deno.test("tls init reissues an expiring server certificate from the same CA and refuses a half CA", async () => {
  await using dir = await tempDir();
  const first = await tlsInit(dir.path);
  assert(first.caCreated && first.certIssued);
  const ca = await Deno.readTextFile(first.caCert);
  const inTwoYears = Date.now() + 2 * 365 * 86_400_000 + 100 * 86_400_000; // within 30 days of 825
  const later = await tlsInit(dir.path, { now: () => inTwoYears });
  assertEquals([later.caCreated, later.certIssued], [false, true]);
  assertEquals(await Deno.readTextFile(first.caCert), ca);
  const info = readCertificate(fromPem("CERTIFICATE", await Deno.readTextFile(later.cert)));
  assertEquals(info.issuer, readCertificate(fromPem("CERTIFICATE", ca)).subject);

  await Deno.remove(first.caCert);
  const io = captureIo();
  const config = await writeConfig(dir.path, { cacheDir: dir.path });
  assertEquals(await tlsCommand.run(["init", "-c", config], testContext(io)), 1);
  assertMatch(io.errLines.join("\n"), /has ca\.key but no ca\.pem; rerun with --force/);
});

Deno.test("the local CA cannot vouch for names other than localhost, 127.0.0.1 and ::1", async () => {
  await using dir = await tempDir();
  const t = await tlsInit(dir.path);
  const caPem = await Deno.readTextFile(t.caCert);
  const caKey = await importKey(fromPem("PRIVATE KEY", await Deno.readTextFile(t.caKey)));
  const issuer = { name: readCertificate(fromPem("CERTIFICATE", caPem)).subject, key: caKey };
  const serveWith = async (names: string[]) => {
    const key = await generateKey();
    const der = await makeCertificate({
      subjectCn: names[0]!,
      subject: key,
      issuer,
      notBefore: new Date(Date.now() - 60_000),
      notAfter: new Date(Date.now() + 86_400_000),
      ca: false,
      names,
    });
    const server = Deno.serve({
      hostname: "127.0.0.1",
      port: 0,
      onListen() {},
      cert: toPem("CERTIFICATE", der),
      key: toPem("PRIVATE KEY", key.pkcs8),
    }, () => new Response("ok"));
    try {
      return await fetchStatus(`https://127.0.0.1:${server.addr.port}/`, caPem).catch((e) =>
        `${e.message} ${e.cause ?? ""}`
      );
    } finally {
      await server.shutdown();
    }
  };
  // Control: a certificate for the permitted names works...
  assertEquals(await serveWith(["127.0.0.1"]), 200);
  // ...one that also claims another site, signed by the same CA key, does not.
  const refused = await serveWith(["127.0.0.1", "bank.example"]);
  assertNotEquals(refused, 200);
  assertMatch(String(refused), /NameConstraint|name constraint/i);
});

Deno.test("repoxy tls init runs with the service's permission set (no openssl, no --allow-run)", async () => {
  await using dir = await tempDir();
  const run = await runCli(["tls", "init", "--cache-dir", dir.path]);
  assertEquals(run.code, 0, run.stderr);
  assertMatch(run.stdout, /Created a local CA/);
  const bad = await runCli(["tls", "create", "--cache-dir", dir.path]);
  assertEquals(bad.code, 2);
  assertMatch(bad.stderr, /expected "repoxy tls init"/);
});
