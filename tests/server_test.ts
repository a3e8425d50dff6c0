/**
 * The real TLS server: archives arrive intact over HTTP/1.1 and HTTP/2 (the
 * bodies release their chunks once Deno's writer has them, so this guards
 * against anything wrapping them), TCP_NODELAY reaches accepted connections,
 * and a client that hangs up mid-download is logged and leaks nothing.
 */
import { assert, assertEquals } from "../lib/deps/assert.ts";
import { join } from "../lib/deps/path.ts";
import type { RunningServer } from "../lib/http/server.ts";
import { serveApp } from "../lib/app.ts";
import { hasNoDelay, openSocketLib, socketPort } from "../lib/http/tcp_nodelay.ts";
import { startFakeRegistry } from "./fake_registry.ts";
import { makeTestTls, type TestTls } from "./_tls.ts";
import { makeProviderZip } from "./_zip.ts";
import { makeTestApp, sha256Hex, tempDir, type TestApp, TWO_PROVIDERS } from "./_helpers.ts";

const H = "registry.terraform.io";
const BIG = "terraform-provider-alpha_1.1.0_linux_amd64.zip";

async function hasCurl(): Promise<boolean> {
  try {
    return (await new Deno.Command("curl", { args: ["--version"], stdout: "null" }).output())
      .success;
  } catch {
    return false;
  }
}

async function withServer(
  fn: (
    s: { server: RunningServer; t: TestApp; tls: TestTls; base: string; big: Uint8Array },
  ) => Promise<void>,
  fillerSize = 3 * 1024 * 1024 + 12345,
  http2 = false,
) {
  // Several chunks' worth of incompressible data (random where it is small).
  const filler = new Uint8Array(fillerSize);
  if (fillerSize < 8 * 1024 * 1024) {
    for (let i = 0; i < filler.length; i += 65536) {
      crypto.getRandomValues(filler.subarray(i, Math.min(i + 65536, filler.length)));
    }
  }
  const big = await makeProviderZip("alpha", "1.1.0", "linux_amd64", [
    { name: "data.bin", data: filler },
  ]);
  await using fake = await startFakeRegistry({
    providers: TWO_PROVIDERS,
    zipOverride: (name, zip) => name === BIG ? big : zip,
  });
  await using dir = await tempDir();
  await Deno.mkdir(join(dir.path, "tls"));
  const tls = await makeTestTls(join(dir.path, "tls"));
  await using t = await makeTestApp(fake, join(dir.path, "cache"), {
    listen: "127.0.0.1:0",
    tls: { cert: tls.certPath, key: tls.keyPath, http2 },
  });
  const server = serveApp(t.app);
  try {
    await fn({ server, t, tls, base: `https://127.0.0.1:${server.port}/${H}/example/alpha`, big });
  } finally {
    await server.shutdown(5000);
  }
}

async function curl(args: string[]): Promise<Uint8Array> {
  const out = await new Deno.Command("curl", { args: ["-s", "--fail", ...args], stdout: "piped" })
    .output();
  assert(out.success, `curl ${args.join(" ")} failed with ${out.code}`);
  return out.stdout;
}

Deno.test({
  name: "archives arrive intact over TLS with HTTP/1.1 and HTTP/2, cold and warm, whole and ranged",
  ignore: !await hasCurl(),
  async fn() {
    await withServer(
      async ({ t, tls, base, big }) => {
        const url = `${base}/${BIG}`;
        const ca = ["--cacert", tls.caCertPath];
        const cold = await curl([...ca, "--http1.1", url]);
        assertEquals(sha256Hex(cold), sha256Hex(big));
        await t.app.settle();
        for (const http of ["--http1.1", "--http2"]) {
          const warm = await curl([...ca, http, url]);
          assertEquals(sha256Hex(warm), sha256Hex(big), http);
          const part = await curl([...ca, http, "-r", "1000-2000000", url]);
          assertEquals(sha256Hex(part), sha256Hex(big.slice(1000, 2000001)), `${http} range`);
        }
        const version = new TextDecoder().decode(
          await curl([...ca, "--http2", "-o", "/dev/null", "-w", "%{http_version}", url]),
        );
        assertEquals(version, "2", "HTTP/2 is negotiated by ALPN");

        const client = Deno.createHttpClient({ caCerts: [tls.caCertPem] });
        try {
          const res = await fetch(url, { client });
          assertEquals(sha256Hex(new Uint8Array(await res.arrayBuffer())), sha256Hex(big));
        } finally {
          client.close();
        }
      },
      undefined,
      true,
    );
  },
});

/** TCP_NODELAY of each socket this process accepted on `port` from `conn`. */
function acceptedNoDelay(port: number, conn: Deno.Conn): Array<boolean | undefined> {
  const clientPort = (conn.localAddr as Deno.NetAddr).port;
  const lib = openSocketLib();
  try {
    const found = [];
    for (let fd = 3; fd < 4096; fd++) {
      if (socketPort(lib, fd) === port && socketPort(lib, fd, true) === clientPort) {
        found.push(hasNoDelay(lib, fd));
      }
    }
    return found;
  } finally {
    lib.close();
  }
}

Deno.test("TLS connections get TCP_NODELAY from the listening socket", async () => {
  await withServer(async ({ server, tls }) => {
    const nd = await server.noDelay;
    assert(nd.ok, `TCP_NODELAY not set: ${JSON.stringify(nd)}`);
    const conn = await Deno.connectTls({
      hostname: "127.0.0.1",
      port: server.port,
      caCerts: [tls.caCertPem],
    });
    try {
      await conn.write(
        new TextEncoder().encode("GET /-/healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"),
      );
      const buf = new Uint8Array(4096);
      assert((await conn.read(buf) ?? 0) > 0);
      assertEquals(acceptedNoDelay(server.port, conn), [true], "the accepted socket has it");
    } finally {
      conn.close();
    }
  });
});

Deno.test("plain-TCP connections from our own accept loop keep TCP_NODELAY", async () => {
  const { startServer } = await import("../lib/http/server.ts");
  const { memoryLogger } = await import("../lib/base/log.ts");
  const server = startServer(() => Promise.resolve(new Response("ok")), {
    hostname: "127.0.0.1",
    port: 0,
    log: memoryLogger(),
  });
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
  try {
    await conn.write(new TextEncoder().encode("GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
    assert((await conn.read(new Uint8Array(4096)) ?? 0) > 0);
    assertEquals(acceptedNoDelay(server.port, conn), [true], "the accepted socket has it");
  } finally {
    conn.close();
    await server.shutdown(1000);
  }
});

Deno.test("a client hanging up mid-download is logged and its file is closed", async () => {
  await withServer(async ({ t, tls, base, server, big }) => {
    const path = new URL(`${base}/${BIG}`).pathname;
    // Cache it first, so the abort hits the file-serving path.
    const client = Deno.createHttpClient({ caCerts: [tls.caCertPem] });
    try {
      await (await fetch(`${base}/${BIG}`, { client })).arrayBuffer();
    } finally {
      client.close();
    }
    await t.app.settle();
    const conn = await Deno.connectTls({
      hostname: "127.0.0.1",
      port: server.port,
      caCerts: [tls.caCertPem],
    });
    await conn.write(new TextEncoder().encode(`GET ${path} HTTP/1.1\r\nHost: x\r\n\r\n`));
    const buf = new Uint8Array(64 * 1024);
    let got = 0;
    while (got < 100_000) got += await conn.read(buf) ?? Infinity;
    conn.close();
    let line: Record<string, unknown> | undefined;
    for (let i = 0; i < 100 && !line; i++) {
      line = t.log.records.find((r) => r.msg === "request" && r.note === "client went away");
      if (!line) await new Promise((r) => setTimeout(r, 20));
    }
    assert(line, "the abort is logged");
    assertEquals(line.path, path);
    assertEquals(line.status, 200);
    assert((line.bytes as number) < big.length);
    // Loopback socket buffers hold several MB, so the body must be larger
    // than they are for the server to notice the hang-up while sending.
  }, 40 * 1024 * 1024);
});

Deno.test({
  name: "shutdownPeers finds a socket above a long run of closed descriptors",
  ignore: Deno.build.os !== "linux",
}, async () => {
  const { shutdownPeers } = await import("../lib/http/tcp_nodelay.ts");
  // Connections that come and go leave the low descriptors free: a socket
  // still open above them must be found all the same (the server passes a
  // gap sized by its connection cap; 1,500 closed here).
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  const files = Array.from({ length: 1500 }, () => Deno.openSync("/dev/null"));
  const client = await Deno.connect({ hostname: "127.0.0.1", port });
  const accepted = await listener.accept();
  for (const f of files) f.close();
  try {
    const peer = (client.localAddr as Deno.NetAddr).port;
    assertEquals(await shutdownPeers(port, new Set([peer]), 4 * 1000), 1);
    // Shut both ways: the client reads end of stream.
    assertEquals(await client.read(new Uint8Array(16)), null);
  } finally {
    client.close();
    accepted.close();
    listener.close();
  }
});
