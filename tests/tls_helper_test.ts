import { makeTestTls, type TestTls } from "./_tls.ts";
import { assert, assertEquals, assertMatch, assertRejects } from "../lib/deps/assert.ts";

async function withHttpsServer(
  tls: TestTls,
  fn: (port: number) => Promise<void>,
): Promise<void> {
  const server = Deno.serve(
    { port: 0, hostname: "127.0.0.1", cert: tls.certPem, key: tls.keyPem, onListen() {} },
    () => new Response("hi"),
  );
  try {
    await fn(server.addr.port);
  } finally {
    await server.shutdown();
  }
}

async function hasCurl(): Promise<boolean> {
  try {
    return (await new Deno.Command("curl", { args: ["--version"], stdout: "null" }).output())
      .success;
  } catch {
    return false;
  }
}

Deno.test("makeTestTls makes a CA and a server certificate that Deno's fetch trusts", async () => {
  const dir = await Deno.makeTempDir({ prefix: "repoxy-tls-" });
  try {
    const tls = await makeTestTls(dir);
    assertMatch(tls.caCertPem, /^-----BEGIN CERTIFICATE-----/);
    assertMatch(tls.certPem, /^-----BEGIN CERTIFICATE-----/);
    assertMatch(tls.keyPem, /^-----BEGIN PRIVATE KEY-----/);
    assertEquals(await Deno.readTextFile(tls.caCertPath), tls.caCertPem);

    await withHttpsServer(tls, async (port) => {
      const client = Deno.createHttpClient({ caCerts: [tls.caCertPem] });
      try {
        const res = await fetch(`https://127.0.0.1:${port}/`, { client });
        assertEquals(res.status, 200);
        assertEquals(await res.text(), "hi");
      } finally {
        client.close();
      }

      // Without the CA the handshake must fail, or the test proves nothing.
      await assertRejects(
        () => fetch(`https://127.0.0.1:${port}/`).then((r) => r.body?.cancel()),
        (err: unknown) => {
          const detail = err instanceof Error ? `${err.message} ${err.cause}` : String(err);
          assertMatch(detail, /certificate|issuer/i);
          return true;
        },
      );
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "makeTestTls certificate satisfies curl (OpenSSL) for both IP and localhost names",
  ignore: !(await hasCurl()),
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "repoxy-tls-" });
    try {
      const tls = await makeTestTls(dir);
      await withHttpsServer(tls, async (port) => {
        for (const host of ["127.0.0.1", "localhost"]) {
          const out = await new Deno.Command("curl", {
            args: [
              "--silent",
              "--show-error",
              "--fail",
              "--cacert",
              tls.caCertPath,
              // Pins localhost to IPv4, where the server listens.
              "--resolve",
              `localhost:${port}:127.0.0.1`,
              `https://${host}:${port}/`,
            ],
          }).output();
          const stderr = new TextDecoder().decode(out.stderr);
          assert(out.success, `curl to ${host} failed: ${stderr}`);
          assertEquals(new TextDecoder().decode(out.stdout), "hi");
        }
      });
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
