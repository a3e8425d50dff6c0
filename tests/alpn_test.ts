/**
 * ALPN over TLS follows `tls.http2`: HTTP/1.1 only by default (Deno's HTTP/2
 * send path is slower for archives, issue 12), ["h2", "http/1.1"] when asked.
 * Clients that can do both (Deno's TLS client, curl, Terraform's Go client)
 * must end up with what the config says, and still get the right bytes.
 * Graceful shutdown over TLS works as before with either protocol. Also pins
 * the internal Deno API the server is built on, so a Deno upgrade that moves
 * it fails here with a clear message.
 */
import { serveApp } from "../lib/app.ts";
import { buildConfig, ConfigError } from "../lib/config/config.ts";
import { assert, assertEquals, assertRejects } from "../lib/deps/assert.ts";
import { join } from "../lib/deps/path.ts";
import { ALPN_HTTP1, ALPN_HTTP2, type RunningServer, startServer } from "../lib/http/server.ts";
import { memoryLogger } from "../lib/base/log.ts";
import { canServeConnections } from "../lib/http/serve_conn.ts";
import { startFakeRegistry } from "./fake_registry.ts";
import { makeTestTls, type TestTls } from "./_tls.ts";
import { makeTestApp, sha256Hex, tempDir, type TestApp, TWO_PROVIDERS } from "./_helpers.ts";
import { findTerraform, requiredProvidersTf, runTerraform, skip } from "./_terraform.ts";

const H = "registry.terraform.io";
const ZIP = "terraform-provider-alpha_1.1.0_linux_amd64.zip";
const PEM = "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n";

// deno-lint-ignore no-console
const say = (line: string) => console.log(line);

// Decided at module load, so a missing tool shows as ignored, never as passed.
const CURL = await (async () => {
  try {
    const out = await new Deno.Command("curl", { args: ["-V"], stdout: "piped" }).output();
    // Default negotiation picks h2 only where curl was built with nghttp2.
    return out.success && /\bHTTP2\b/.test(new TextDecoder().decode(out.stdout));
  } catch {
    return false;
  }
})();
if (!CURL) say("SKIP: curl with HTTP/2 support is not installed (ALPN curl test)");
const TERRAFORM = await findTerraform();
const TF_NAME = "terraform installs through the network mirror with tls.http2 false and true";
if (!TERRAFORM) skip(TF_NAME, "terraform is not on PATH");

const fakeEnv = (files: Record<string, string>) => ({
  readTextFile: (p: string) =>
    p in files ? Promise.resolve(files[p]!) : Promise.reject(new Error("no such file")),
  getEnv: () => undefined,
  cwd: () => "/",
});

Deno.test("config: tls.http2 defaults to false, takes a boolean, needs cert and key", async () => {
  const env = fakeEnv({ "/t/c.pem": PEM, "/t/k.pem": PEM });
  const tls = { cert: "c.pem", key: "k.pem" };
  assertEquals((await buildConfig({ tls }, {}, "/t", env)).tls?.http2, false);
  assertEquals(
    (await buildConfig({ tls: { ...tls, http2: false } }, {}, "/t", env)).tls?.http2,
    false,
  );
  assertEquals(
    (await buildConfig({ tls: { ...tls, http2: true } }, {}, "/t", env)).tls?.http2,
    true,
  );
  for (
    const [bad, msg] of [
      ["true", `"tls.http2" must be true or false, got a string`],
      [1, `"tls.http2" must be true or false, got a number`],
      [null, `"tls.http2" must be true or false, got null`],
    ] as const
  ) {
    await assertRejects(
      () => buildConfig({ tls: { ...tls, http2: bad } }, {}, "/t", env),
      ConfigError,
      msg,
    );
  }
  await assertRejects(
    () => buildConfig({ tls: { http2: true } }, {}, "/t", env),
    ConfigError,
    `"tls.http2" needs "tls.cert" and "tls.key"`,
  );
});

Deno.test("the internal Deno API the server runs on is still there (Deno upgrade guard)", () => {
  // deno-lint-ignore no-explicit-any
  const d = Deno as any;
  const api = d[d.internal];
  const where = `Deno ${Deno.version.deno}: lib/http/serve_conn.ts needs`;
  assertEquals(typeof api?.serveHttpOnConnection, "function", `${where} serveHttpOnConnection`);
  assertEquals(api.serveHttpOnConnection.length, 5, `${where} its 5-argument shape`);
  assertEquals(typeof api.core?.resources, "function", `${where} core.resources`);
  assertEquals(typeof api.core?.tryClose, "function", `${where} core.tryClose`);
  assertEquals(typeof api.core?.internalRidSymbol, "symbol", `${where} core.internalRidSymbol`);
  assert(canServeConnections());
});

/** Waits (up to 10 s, for a loaded CI machine) for the server side of a connection to catch up. */
async function until(cond: () => boolean): Promise<void> {
  for (let i = 0; i < 1000 && !cond(); i++) await new Promise((r) => setTimeout(r, 10));
}

/** A Repoxy over TLS (with `http2` as given) in front of a fake registry. */
async function withMirror(
  http2: boolean | undefined,
  fn: (m: { server: RunningServer; tls: TestTls; t: TestApp; zip: Uint8Array }) => Promise<void>,
) {
  await using fake = await startFakeRegistry({ providers: TWO_PROVIDERS });
  await using dir = await tempDir();
  const tls = await makeTestTls(join(dir.path, "tls"));
  await using t = await makeTestApp(fake, join(dir.path, "cache"), {
    listen: "127.0.0.1:0",
    tls: {
      cert: tls.certPath,
      key: tls.keyPath,
      ...(http2 === undefined ? {} : { http2 }),
    },
  });
  const server = serveApp(t.app);
  try {
    await fn({ server, tls, t, zip: fake.archive("alpha", "1.1.0", "linux_amd64").bytes });
  } finally {
    await server.shutdown(2000);
  }
}

/** The protocol ALPN settles on for a client offering both, as Go and curl do. */
async function negotiate(server: RunningServer, tls: TestTls): Promise<string | null> {
  const conn = await Deno.connectTls({
    hostname: "127.0.0.1",
    port: server.port,
    caCerts: [tls.caCertPem],
    alpnProtocols: ["h2", "http/1.1"],
  });
  try {
    return (await conn.handshake()).alpnProtocol;
  } finally {
    conn.close();
  }
}

for (
  const [label, http2, expected] of [
    ["default (absent)", undefined, "http/1.1"],
    ["false", false, "http/1.1"],
    ["true", true, "h2"],
  ] as const
) {
  Deno.test(`tls.http2 ${label}: a client offering h2 and http/1.1 gets ${expected}`, async () => {
    await withMirror(http2, async ({ server, tls }) => {
      assertEquals(server.alpnProtocols, http2 ? [...ALPN_HTTP2] : [...ALPN_HTTP1]);
      assertEquals(await negotiate(server, tls), expected);
      // A client that offers no ALPN at all is still served (HTTP/1.1).
      const plain = await Deno.connectTls({
        hostname: "127.0.0.1",
        port: server.port,
        caCerts: [tls.caCertPem],
      });
      try {
        assertEquals((await plain.handshake()).alpnProtocol, null);
        await plain.write(new TextEncoder().encode("GET /-/healthz HTTP/1.1\r\nHost: x\r\n\r\n"));
        const buf = new Uint8Array(4096);
        const n = await plain.read(buf) ?? 0;
        assert(
          new TextDecoder().decode(buf.subarray(0, n)).startsWith("HTTP/1.1 200"),
          "no-ALPN client answered over HTTP/1.1",
        );
      } finally {
        plain.close();
      }
      await until(() => Object.values(server.negotiated).length === 2);
      assertEquals(server.negotiated, { [expected]: 1, none: 1 });
    });
  });
}

Deno.test("with HTTP/1.1 only, a client that insists on h2 is refused at the handshake", async () => {
  await withMirror(false, async ({ server, tls }) => {
    const conn = await Deno.connectTls({
      hostname: "127.0.0.1",
      port: server.port,
      caCerts: [tls.caCertPem],
      alpnProtocols: ["h2"],
    });
    try {
      // rustls answers a disjoint ALPN list with a no_application_protocol alert.
      await assertRejects(() => conn.handshake());
    } finally {
      conn.close();
    }
    // ... leaks no connection, and goes on serving.
    await until(() => server.connections === 0);
    assertEquals(server.connections, 0);
    assertEquals(await negotiate(server, tls), "http/1.1");
    // (The server sees its side of the handshake finish a moment later.)
    await until(() => server.negotiated["http/1.1"] !== undefined);
    assertEquals(server.negotiated, { "http/1.1": 1 }, "the refused handshake is not counted");
  });
});

Deno.test({
  name: "curl's default negotiation: HTTP/1.1 by default, HTTP/2 with tls.http2, same bytes",
  ignore: !CURL,
  async fn() {
    for (const [http2, version] of [[false, "1.1"], [true, "2"]] as const) {
      await withMirror(http2, async ({ server, tls, t, zip }) => {
        const url = `${server.url}${H}/example/alpha/${ZIP}`;
        const got: string[] = [];
        // Cold (streamed through from the upstream) then warm (from the cache).
        for (const pass of ["cold", "warm"]) {
          const out = await new Deno.Command("curl", {
            args: ["-s", "--fail", "--cacert", tls.caCertPath, "-w", "%{http_version}", url],
            stdout: "piped",
          }).output();
          assert(out.success, `curl (${pass}) failed with ${out.code}`);
          // The body, then the -w output.
          const body = out.stdout.subarray(0, out.stdout.length - version.length);
          assertEquals(sha256Hex(body), sha256Hex(zip), `${pass} bytes`);
          got.push(new TextDecoder().decode(out.stdout.subarray(body.length)));
          await t.app.settle();
        }
        assertEquals(got, [version, version], `tls.http2 ${http2}`);
        const fetched = t.upstream.filter((u) => u.url.endsWith(".zip") && u.status === 200);
        assertEquals(fetched.length, 1, "the warm pass came from the cache");
      });
    }
  },
});

Deno.test({ name: TF_NAME, ignore: !TERRAFORM }, async () => {
  for (const http2 of [false, true]) {
    await withMirror(http2, async ({ server, tls }) => {
      await using work = await tempDir();
      await Deno.writeTextFile(
        join(work.path, "main.tf"),
        requiredProvidersTf([
          { name: "alpha", source: "registry.terraform.io/example/alpha", version: "1.1.0" },
        ]),
      );
      const r = await runTerraform(["init", "-input=false", "-no-color"], {
        cwd: work.path,
        cliConfig:
          `provider_installation {\n  network_mirror {\n    url = "${server.url}"\n  }\n}\n`,
        caCertFile: tls.caCertPath,
        home: work.path,
      });
      assertEquals(r.code, 0, `terraform init (tls.http2 ${http2}) failed:\n${r.stderr}`);
      assert(r.stdout.includes("Installed example/alpha v1.1.0"), r.stdout);
      // What Terraform's Go client (which offers h2 and http/1.1) really got.
      const n = server.negotiated;
      const want = http2 ? "h2" : "http/1.1";
      assert((n[want] ?? 0) > 0, `tls.http2 ${http2}: ${JSON.stringify(n)}`);
      assertEquals(Object.keys(n), [want], `tls.http2 ${http2}: only ${want}`);
    });
  }
});

Deno.test("graceful shutdown over TLS, HTTP/1.1 (default) and h2: in-flight bodies finish, idle connections close", async () => {
  await using dir = await tempDir();
  const tls = await makeTestTls(join(dir.path, "tls"));
  const CHUNKS = 8;
  const chunk = new Uint8Array(64 * 1024).fill(7);
  for (const http2 of [false, true]) {
    const log = memoryLogger();
    // The body holds after its first chunk until the idle connection is seen
    // closed, so "the busy one stays" does not depend on how fast the machine is.
    const { promise: held, resolve: release } = Promise.withResolvers<void>();
    const server = startServer((req) => {
      if (!req.url.endsWith("/slow")) return Promise.resolve(new Response("ok"));
      let n = 0;
      return Promise.resolve(
        new Response(
          new ReadableStream({
            async pull(c) {
              if (n > 0) await held;
              c.enqueue(chunk.slice());
              if (++n === CHUNKS) c.close();
            },
          }),
        ),
      );
    }, {
      hostname: "127.0.0.1",
      port: 0,
      log,
      tls: { certPem: tls.certPem, keyPem: tls.keyPem, http2 },
    });
    // Separate clients, so the idle one keeps a connection of its own.
    const opts = { caCerts: [tls.caCertPem], http1: !http2, http2 };
    const busy = Deno.createHttpClient(opts);
    const idle = Deno.createHttpClient(opts);
    try {
      const ok = await fetch(`${server.url}ok`, { client: idle });
      assertEquals(await ok.text(), "ok");
      const res = await fetch(`${server.url}slow`, { client: busy });
      const body = res.arrayBuffer();
      await until(() => server.connections === 2);
      assertEquals(server.connections, 2);
      const stopped = server.shutdown(10_000);
      // The idle keep-alive connection goes at once; the busy one stays.
      await until(() => server.connections === 1);
      assertEquals(server.connections, 1, `http2 ${http2}: the idle connection was closed`);
      release();
      const got = new Uint8Array(await body);
      assertEquals(got.length, CHUNKS * chunk.length, `http2 ${http2}: the body finished`);
      assert(got.every((b) => b === 7));
      await stopped;
      assertEquals(server.connections, 0);
      assertEquals(server.negotiated, { [http2 ? "h2" : "http/1.1"]: 2 });
      assert(
        !log.lines.some((l) => l.includes("shutdown deadline passed")),
        "drained, not cut at the deadline",
      );
    } finally {
      release();
      busy.close();
      idle.close();
      await server.shutdown(1000);
    }
  }
});
