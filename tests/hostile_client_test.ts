/**
 * Hostile clients against the real listening server (issue 10, row 6): a
 * connection that sends nothing, one that trickles its headers, an idle
 * keep-alive connection, more connections than the cap, hundreds of idle
 * sockets under a lowered file-descriptor limit, and SIGTERM with idle
 * sockets open. Real sockets: the socket is the point here.
 */
import { assert, assertEquals } from "../lib/deps/assert.ts";
import { fromFileUrl, join } from "../lib/deps/path.ts";
import { memoryLogger } from "../lib/base/log.ts";
import { type RunningServer, type ServerOptions, startServer } from "../lib/http/server.ts";
import { spawnRepoxy } from "./_process.ts";
import { makeTestTls, type TestTls } from "./_tls.ts";
import { tempDir } from "./_helpers.ts";

const ROOT = fromFileUrl(new URL("..", import.meta.url));
const MAIN = join(ROOT, "main.ts");
const DENO_RUN = ["run", "-q", "--frozen", "--config", join(ROOT, "deno.json"), "-P=serve"];
const enc = new TextEncoder();
const dec = new TextDecoder();

const BODY = "served:";

/** SKIP lines, and the figures the report quotes (never asserted on). */
function say(line: string): void {
  // deno-lint-ignore no-console
  console.log(line);
}

/** A server whose handler answers `served:<path>`, waiting `?wait=ms` first. */
function server(
  limits: ServerOptions["limits"],
  tls?: TestTls,
): RunningServer & { log: ReturnType<typeof memoryLogger>; started: () => number } {
  const log = memoryLogger();
  let started = 0;
  const s = startServer(async (req) => {
    started++;
    const url = new URL(req.url);
    const wait = Number(url.searchParams.get("wait") ?? 0);
    if (wait) await new Promise((r) => setTimeout(r, wait));
    const trickle = Number(url.searchParams.get("trickle") ?? 0);
    if (trickle) {
      // A body sent as `trickle` chunks 100 ms apart: a long download.
      let n = 0;
      return new Response(
        new ReadableStream({
          async pull(c) {
            await new Promise((r) => setTimeout(r, 100));
            c.enqueue(enc.encode(`chunk${n}\n`));
            if (++n === trickle) c.close();
          },
        }),
      );
    }
    return new Response(BODY + url.pathname);
  }, {
    hostname: "127.0.0.1",
    port: 0,
    log,
    limits,
    // HTTP/2 offered too: the TLS tests cover both protocols' connection handling.
    ...(tls ? { tls: { certPem: tls.certPem, keyPem: tls.keyPem, http2: true } } : {}),
  });
  return Object.assign(s, { log, started: () => started });
}

/** Resolves with the first read's outcome, or "open" if nothing happened within `ms`. */
async function readOutcome(
  conn: Deno.Conn,
  ms: number,
): Promise<{ kind: "closed" } | { kind: "data"; text: string } | { kind: "open" }> {
  const buf = new Uint8Array(16384);
  let timer: ReturnType<typeof setTimeout> | undefined;
  const read = conn.read(buf).then(
    (n) =>
      n === null ? { kind: "closed" as const } : {
        kind: "data" as const,
        text: dec.decode(buf.subarray(0, n)),
      },
    () => ({ kind: "closed" as const }), // ECONNRESET is a close too
  );
  const res = await Promise.race([
    read,
    new Promise<{ kind: "open" }>((r) => (timer = setTimeout(() => r({ kind: "open" }), ms))),
  ]);
  clearTimeout(timer);
  if (res.kind === "open") {
    // Leave no read pending when the caller closes the socket.
    conn.close();
    await read;
  }
  return res;
}

/** Reads (and drops) whatever comes until the peer closes: "closed", or "open" after `ms`. */
async function untilClosed(conn: Deno.Conn, ms: number): Promise<"closed" | "open"> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    const out = await readOutcome(conn, end - Date.now());
    if (out.kind !== "data") return out.kind;
  }
  return "open";
}

function connect(port: number): Promise<Deno.TcpConn> {
  return Deno.connect({ hostname: "127.0.0.1", port });
}

async function waitFor(cond: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error("condition not reached");
    await new Promise((r) => setTimeout(r, 10));
  }
}

function request(path: string): Uint8Array {
  return enc.encode(`GET ${path} HTTP/1.1\r\nHost: x\r\n\r\n`);
}

Deno.test("a connection that sends nothing is closed after headerTimeout", async () => {
  const s = server({ headerTimeoutMs: 300, idleTimeoutMs: 60_000 });
  try {
    const conn = await connect(s.port);
    await waitFor(() => s.connections === 1);
    const out = await readOutcome(conn, 5000);
    assertEquals(out.kind, "closed");
    await waitFor(() => s.connections === 0);
    conn.close();
  } finally {
    await s.shutdown(1000);
  }
});

Deno.test("slowloris: headers trickled byte by byte are cut at the header timeout's total", async () => {
  const s = server({ headerTimeoutMs: 400, idleTimeoutMs: 60_000 });
  try {
    const conn = await connect(s.port);
    await conn.write(enc.encode("GET / HTTP/1.1\r\nHost: x\r\n"));
    // One byte every 20 ms of a header that would take 10 s to finish.
    const header = enc.encode("X-Slow: " + "a".repeat(500));
    let sent = 0;
    let closed = false;
    const reader = readOutcome(conn, 20_000).then((o) => {
      closed = true;
      return o;
    });
    while (!closed && sent < header.length) {
      try {
        await conn.write(header.subarray(sent, sent + 1));
      } catch {
        break; // EPIPE/ECONNRESET: the server cut us
      }
      sent++;
      await new Promise((r) => setTimeout(r, 20));
    }
    const out = await reader;
    assertEquals(out.kind, "closed", "cut, never answered");
    assert(sent < header.length, `cut after ${sent} of ${header.length} trickled bytes`);
    await waitFor(() => s.connections === 0);
    conn.close();
  } finally {
    await s.shutdown(1000);
  }
});

Deno.test("an idle keep-alive connection is closed after idleTimeout; a slow response is not cut", async () => {
  const s = server({ headerTimeoutMs: 800, idleTimeoutMs: 800 });
  try {
    const conn = await connect(s.port);
    // In flight 2.5 times longer than both timeouts: answered whole.
    await conn.write(request("/slow?wait=2000"));
    const first = await readOutcome(conn, 5000);
    assertEquals(first.kind, "data");
    assert(first.kind === "data" && first.text.startsWith("HTTP/1.1 200"), JSON.stringify(first));
    assert(first.kind === "data" && first.text.endsWith(BODY + "/slow"));
    // Kept alive: a second request on the same connection works...
    await conn.write(request("/again"));
    const second = await readOutcome(conn, 5000);
    assert(second.kind === "data" && second.text.endsWith(BODY + "/again"));
    // ...then nothing: closed at the idle timeout.
    assertEquals((await readOutcome(conn, 5000)).kind, "closed");
    await waitFor(() => s.connections === 0);
    conn.close();
    // A body streamed for 1.5 s is not cut either (the response is in flight).
    const stream = await fetch(`${s.url}stream?trickle=15`);
    const text = await stream.text();
    assertEquals(text.split("\n").filter((l) => l).length, 15, text);
  } finally {
    await s.shutdown(1000);
  }
});

Deno.test("an answer still being written at the idle timeout gets one more period; a client that never reads is cut", async () => {
  // In memory, 16 MiB: far more than the socket buffers hold. Deno reports
  // such a body sent as soon as it has it, so the idle clock starts early.
  const big = new Uint8Array(16 * 1024 * 1024).fill(7);
  const log = memoryLogger();
  const s = startServer(() => Promise.resolve(new Response(big)), {
    hostname: "127.0.0.1",
    port: 0,
    log,
    limits: { headerTimeoutMs: 1000, idleTimeoutMs: 1000 },
  });
  try {
    // A slow reader: starts reading after one idle period, then reads it all.
    const slow = await connect(s.port);
    await slow.write(request("/big"));
    await new Promise((r) => setTimeout(r, 1100));
    const buf = new Uint8Array(1 << 20);
    let got = 0;
    for (;;) {
      const n = await slow.read(buf).catch(() => null);
      if (n === null) break;
      got += n;
      if (got >= big.length) break; // (headers are ~100 bytes more)
    }
    assert(got >= big.length, `got ${got} of ${big.length} body bytes`);
    slow.close();
    // A client that never reads: held for two periods at most, then cut.
    const never = await connect(s.port);
    await never.write(request("/big"));
    await waitFor(() => s.connections === 1);
    await waitFor(() => s.connections === 0, 10_000);
    never.close();
  } finally {
    await s.shutdown(1000);
  }
});

Deno.test("connection cap: the N+1th connection waits until one of N closes, then is served", async () => {
  const N = 3;
  const s = server({ headerTimeoutMs: 30_000, idleTimeoutMs: 30_000, maxConnections: N });
  const held: Deno.TcpConn[] = [];
  try {
    for (let i = 0; i < N; i++) held.push(await connect(s.port));
    await waitFor(() => s.connections === N);
    // The kernel completes the handshake (backlog); the server does not accept it.
    const extra = await connect(s.port);
    await extra.write(request("/extra"));
    const pending = readOutcome(extra, 10_000);
    await new Promise((r) => setTimeout(r, 300));
    assertEquals(s.connections, N, "no more than N accepted");
    held.shift()!.close();
    const out = await pending;
    assert(out.kind === "data", JSON.stringify(out));
    assert(out.text.startsWith("HTTP/1.1 200") && out.text.endsWith(BODY + "/extra"), out.text);
    assert(s.connections <= N);
    extra.close();
  } finally {
    for (const c of held) c.close();
    await s.shutdown(1000);
  }
});

Deno.test("clients hanging up mid-request leave no connection behind", async () => {
  const s = server({ headerTimeoutMs: 2000, idleTimeoutMs: 2000 });
  try {
    for (let i = 0; i < 40; i++) {
      const c = await connect(s.port);
      // Half of them hang up while the handler runs, half right after the request.
      await c.write(request(i % 2 ? "/x?wait=50" : "/y"));
      c.close();
    }
    await waitFor(() => s.connections === 0);
    const res = await fetch(`${s.url}after`);
    assertEquals(await res.text(), BODY + "/after");
  } finally {
    await s.shutdown(1000);
  }
});

const opensslOk = await (async () => {
  try {
    return (await new Deno.Command("openssl", { args: ["version"], stdout: "null" }).output())
      .success;
  } catch {
    return false;
  }
})();
if (!opensslOk) say("SKIP: openssl is not installed (TLS half-open test)");

Deno.test({
  name: "TLS: stalled handshakes are closed; abrupt hang-ups leak no connection state",
  ignore: !opensslOk,
  async fn() {
    await using dir = await tempDir();
    const tls = await makeTestTls(dir.path);
    const s = server({ headerTimeoutMs: 1000, idleTimeoutMs: 1000 }, tls);
    try {
      const silent = await connect(s.port);
      const partial = await connect(s.port);
      await partial.write(new Uint8Array([22, 3, 1, 0, 200, 1])); // a ClientHello's start
      const handshaken = await Deno.connectTls({
        hostname: "127.0.0.1",
        port: s.port,
        caCerts: [tls.caCertPem],
      });
      await handshaken.handshake();
      const h2 = await Deno.connectTls({
        hostname: "127.0.0.1",
        port: s.port,
        caCerts: [tls.caCertPem],
        alpnProtocols: ["h2"],
      });
      assertEquals((await h2.handshake()).alpnProtocol, "h2");
      await waitFor(() => s.connections === 4);
      for (const c of [silent, partial, handshaken, h2]) {
        // (HTTP/2 sends its SETTINGS first.)
        assertEquals(await untilClosed(c, 5000), "closed");
        c.close();
      }
      await waitFor(() => s.connections === 0);
      // An HTTP/2 connection idle after its request is closed at the idle timeout.
      const h2client = Deno.createHttpClient({
        caCerts: [tls.caCertPem],
        http1: false,
        http2: true,
      });
      try {
        const res = await fetch(`${s.url}h2`, { client: h2client });
        assertEquals(await res.text(), BODY + "/h2");
        assertEquals(s.connections, 1);
        await waitFor(() => s.connections === 0);
      } finally {
        h2client.close();
      }
      // Clients that hang up without a TLS close_notify, before and after the
      // answer: Deno then skips closing the connection's state, which
      // serve_conn.ts closes itself (the resource sanitizer checks it).
      for (let i = 0; i < 10; i++) {
        const c = await Deno.connectTls({
          hostname: "127.0.0.1",
          port: s.port,
          caCerts: [tls.caCertPem],
          alpnProtocols: i % 2 ? ["h2"] : ["http/1.1"],
        });
        await c.handshake();
        if (i % 2 === 0) {
          await c.write(request(i % 4 ? "/x?wait=50" : "/y"));
          if (i % 4 === 0) await readOutcome(c, 5000);
        }
        c.close();
      }
      await waitFor(() => s.connections === 0);
      // And the server still serves.
      const client = Deno.createHttpClient({ caCerts: [tls.caCertPem] });
      try {
        const res = await fetch(`${s.url}ok`, { client });
        assertEquals(res.status, 200);
        assertEquals(await res.text(), BODY + "/ok");
      } finally {
        client.close();
      }
    } finally {
      await s.shutdown(1000);
    }
  },
});

Deno.test("shutdown closes idle connections at once and lets an in-flight response finish", async () => {
  const s = server({ headerTimeoutMs: 30_000, idleTimeoutMs: 30_000 });
  const idle = await connect(s.port);
  await idle.write(request("/first"));
  assert((await readOutcome(idle, 5000)).kind === "data");
  const silent = await connect(s.port);
  const busy = await connect(s.port);
  await busy.write(request("/busy?wait=500"));
  await waitFor(() => s.connections === 3 && s.started() === 2);
  const stopped = s.shutdown(20_000);
  assertEquals((await readOutcome(idle, 5000)).kind, "closed");
  assertEquals((await readOutcome(silent, 5000)).kind, "closed");
  const out = await readOutcome(busy, 5000);
  assert(out.kind === "data" && out.text.endsWith(BODY + "/busy"), JSON.stringify(out));
  await stopped;
  for (const c of [idle, silent, busy]) c.close();
});

Deno.test("shutdown cuts a client that never reads its answer at the drain deadline", async () => {
  const big = new Uint8Array(16 * 1024 * 1024);
  const s = startServer(() => Promise.resolve(new Response(big)), {
    hostname: "127.0.0.1",
    port: 0,
    log: memoryLogger(),
    limits: { headerTimeoutMs: 30_000, idleTimeoutMs: 30_000 },
  });
  const never = await connect(s.port);
  await never.write(request("/big"));
  await waitFor(() => s.connections === 1);
  await new Promise((r) => setTimeout(r, 100)); // its answer is being written
  await s.shutdown(300);
  assertEquals(s.connections, 0);
  never.close();
});

/** Opens up to `n` idle sockets; stops at the first that fails (client side). */
async function openIdle(port: number, n: number): Promise<Deno.TcpConn[]> {
  const conns: Deno.TcpConn[] = [];
  for (let i = 0; i < n; i++) {
    try {
      conns.push(await connect(port));
    } catch {
      break;
    }
  }
  return conns;
}

/** The number of open file descriptors of process `pid` (Deno reads /proc only with -A). */
async function fdCount(pid: number): Promise<number> {
  const out = await new Deno.Command("ls", { args: [`/proc/${pid}/fd`], stdout: "piped" })
    .output();
  return dec.decode(out.stdout).split("\n").filter((l) => l !== "").length;
}

async function childPid(url: string): Promise<number | undefined> {
  // The child is the deno process listening on the URL's port.
  const port = new URL(url).port;
  const out = await new Deno.Command("ss", {
    args: ["-Hltnp", `sport = :${port}`],
    stdout: "piped",
  })
    .output().catch(() => undefined);
  const m = out && /pid=(\d+)/.exec(dec.decode(out.stdout));
  return m ? Number(m[1]) : undefined;
}

const hasPrlimit = await (async () => {
  try {
    return (await new Deno.Command("prlimit", { args: ["--version"], stdout: "null" }).output())
      .success;
  } catch {
    return false;
  }
})();
if (!hasPrlimit) say("SKIP: prlimit is not installed (fd-limit test)");

for (const scheme of ["http", "https"] as const) {
  const skipTls = scheme === "https" && !opensslOk;
  Deno.test({
    name:
      `${scheme}: at a 64-fd limit, 300 idle sockets do not kill the process; once they time out it serves`,
    ignore: !hasPrlimit || skipTls,
    async fn() {
      await using dir = await tempDir();
      const cfg = join(dir.path, "repoxy.json");
      const tls = scheme === "https" ? await makeTestTls(join(dir.path, "tls")) : undefined;
      await Deno.writeTextFile(
        cfg,
        JSON.stringify({
          cacheDir: join(dir.path, "cache"),
          // Long enough that the test's own TLS handshake survives a loaded machine;
          // 300 sockets still drain in a few waves well inside the 30 s budget.
          limits: { headerTimeout: "1500ms", idleTimeout: "1500ms" },
          ...(tls ? { tls: { cert: tls.certPath, key: tls.keyPath } } : {}),
        }),
      );
      await using p = await spawnRepoxy("prlimit", [
        "--nofile=64:64",
        Deno.execPath(),
        ...DENO_RUN,
        MAIN,
        "--config",
        cfg,
        "--listen",
        "127.0.0.1:0",
      ]);
      const port = Number(new URL(p.url).port);
      const pid = await childPid(p.url);
      const baseFds = pid ? await fdCount(pid) : 0;
      // Over TLS these never start their handshake: the hardest kind to close.
      const conns = await openIdle(port, 300);
      let peakFds = 0;
      const client = tls ? Deno.createHttpClient({ caCerts: [tls.caCertPem] }) : undefined;
      try {
        assert(conns.length >= 200, `only ${conns.length} client sockets opened`);
        // The server hits EMFILE: it must back off, not exit.
        const end = Date.now() + 600;
        while (Date.now() < end) {
          if (pid) peakFds = Math.max(peakFds, await fdCount(pid));
          await new Promise((r) => setTimeout(r, 20));
        }
        say(
          `FIGURE: ${scheme}: ${conns.length} idle sockets at a 64-fd limit: server fds ${baseFds} -> ${peakFds}`,
        );
        await waitFor(
          () => p.stderr.concat(p.stdout).some((l) => l.includes("accept failed")),
          5000,
        );
        // With every idle socket still open: the held ones time out, the backlog
        // drains in waves, and a normal request queued behind them is served.
        const res = await fetch(`${p.url}-/healthz`, {
          signal: AbortSignal.timeout(30_000),
          ...(client ? { client } : {}),
        });
        assertEquals(res.status, 200);
        assertEquals(JSON.parse(await res.text()).status, "ok");
      } finally {
        client?.close();
        for (const c of conns) c.close();
      }
      const lines = p.stderr.concat(p.stdout);
      const bursts = lines.filter((l) => l.includes("accept failed")).length;
      const failed = lines.map((l) => /failedAccepts=(\d+)/.exec(l)?.[1]).filter((n) => n)
        .reduce((a, n) => a + Number(n), 0);
      say(`FIGURE: ${scheme}: ${failed} failed accepts logged as ${bursts} burst line(s)`);
      assert(bursts >= 1 && failed > bursts, "logged once per burst, not per failure");
      const status = await p.stop("SIGTERM");
      assertEquals(status.code, 0, lines.join("\n"));
    },
  });
}

Deno.test("SIGTERM with idle keep-alive and silent sockets open: exit 0 promptly", async () => {
  await using dir = await tempDir();
  await using p = await spawnRepoxy(Deno.execPath(), [
    ...DENO_RUN,
    MAIN,
    "--cache-dir",
    join(dir.path, "cache"),
    "--listen",
    "127.0.0.1:0",
  ]);
  const port = Number(new URL(p.url).port);
  const conns: Deno.TcpConn[] = [];
  try {
    for (let i = 0; i < 50; i++) {
      const c = await connect(port);
      conns.push(c);
      if (i % 2 === 0) {
        await c.write(request("/-/healthz"));
        const out = await readOutcome(c, 5000);
        assert(out.kind === "data" && out.text.startsWith("HTTP/1.1 200"));
      }
    }
    const t0 = performance.now();
    const status = await p.stop("SIGTERM");
    const ms = performance.now() - t0;
    say(`FIGURE: SIGTERM to exit with 50 idle sockets: ${ms.toFixed(0)} ms`);
    assertEquals(status.code, 0);
    // Not the drain deadline: idle sockets are closed at once, not waited for.
    assert(ms < 10_000, `took ${ms} ms`);
  } finally {
    for (const c of conns) c.close();
  }
});
