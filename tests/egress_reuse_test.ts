/**
 * Pinned plain-http egress keeps its connections (issue 12 point 3): one
 * kept client per (origin, vetted address), so requests reuse a keep-alive
 * connection instead of a new TCP connection each; the pin still holds.
 */
import { assertEquals, assertRejects } from "../lib/deps/assert.ts";
import { memoryLogger } from "../lib/base/log.ts";
import { EgressPolicy } from "../lib/upstream/egress.ts";
import { EgressConnections, MAX_PINNED_CLIENTS } from "../lib/upstream/egress_connections.ts";
import { UpstreamClient } from "../lib/upstream/client.ts";

/** A plain-http server on `hostname` recording, per request, its Host and client port. */
function recorder(hostname: string, port = 0) {
  const seen: Array<{ host: string | null; port: number; path: string }> = [];
  const ac = new AbortController();
  const server = Deno.serve(
    { hostname, port, signal: ac.signal, onListen() {} },
    (req, info) => {
      seen.push({
        host: req.headers.get("host"),
        port: (info.remoteAddr as Deno.NetAddr).port,
        path: new URL(req.url).pathname,
      });
      return new Response(`from ${hostname}`);
    },
  );
  return {
    seen,
    port: server.addr.port,
    async [Symbol.asyncDispose]() {
      ac.abort();
      await server.finished;
    },
  };
}

function clientWith(resolve: (h: string) => Promise<string[]>, connections: EgressConnections) {
  const egress = new EgressPolicy(
    { allowPrivateNetworks: false, egressAllow: ["127.0.0.2/32", "127.0.0.3/32"] },
    { exemptOrigins: [], resolve, env: () => undefined },
  );
  return new UpstreamClient(
    { hostname: "registry.example", url: "https://registry.example/" } as never,
    {
      fetch: (input, init) => fetch(input, init),
      log: memoryLogger(),
      userAgent: "test",
      timeoutMs: 5_000,
      egress,
      connections,
    },
  );
}

Deno.test("pinned plain-http requests reuse one connection to the vetted address; a new DNS answer gets its own", async () => {
  await using a = recorder("127.0.0.2");
  await using b = recorder("127.0.0.3", a.port);
  let answer = "127.0.0.2";
  const connections = new EgressConnections();
  try {
    const client = clientWith(() => Promise.resolve([answer]), connections);
    const host = `downloads.example:${a.port}`;
    for (let i = 0; i < 5; i++) {
      const got = await client.getText(new URL(`http://${host}/doc${i}`));
      assertEquals(got.text, "from 127.0.0.2");
    }
    assertEquals(a.seen.map((s) => s.host), Array(5).fill(host), "URL and Host kept");
    assertEquals(new Set(a.seen.map((s) => s.port)).size, 1, "one connection for five requests");
    assertEquals(connections.pinnedCount, 1);

    // The name now resolves elsewhere (allowed here): that address, a client of its own.
    answer = "127.0.0.3";
    const got = await client.getText(new URL(`http://${host}/after`));
    assertEquals(got.text, "from 127.0.0.3");
    assertEquals(a.seen.length, 5, "the kept connection to the old address was not used");
    assertEquals(b.seen.map((s) => s.path), ["/after"]);
    assertEquals(connections.pinnedCount, 2);
  } finally {
    connections.close();
  }
  assertEquals(connections.pinnedCount, 0);
});

Deno.test("kept pinned clients are bounded: the least recently used is closed", async () => {
  await using a = recorder("127.0.0.2");
  const connections = new EgressConnections();
  try {
    const client = clientWith(() => Promise.resolve(["127.0.0.2"]), connections);
    // Distinct origins (host names) on one address: one kept client each.
    for (let i = 0; i < MAX_PINNED_CLIENTS + 2; i++) {
      const got = await client.getText(new URL(`http://h${i}.example:${a.port}/x`));
      assertEquals(got.text, "from 127.0.0.2");
    }
    assertEquals(connections.pinnedCount, MAX_PINNED_CLIENTS);
    assertEquals(a.seen.length, MAX_PINNED_CLIENTS + 2);
  } finally {
    connections.close();
  }
});

Deno.test("a pinned client retired while a request waits for its headers is closed by that request's done(), not before", async () => {
  await using a = recorder("127.0.0.2");
  const connections = new EgressConnections();
  const url = new URL(`http://h.example:${a.port}/x`);
  const lease = connections.clientFor({ via: "pinned", address: "127.0.0.2" }, url);
  const client = lease.client!;
  try {
    // Shut down while the request is in flight: the client must stay usable...
    connections.close();
    const res = await fetch(url, { client });
    assertEquals(await res.text(), "from 127.0.0.2");
    assertEquals(connections.pinnedCount, 0);
  } finally {
    // ...and be closed by the last user, or it leaks (a fetch on it then fails).
    lease.done();
  }
  await assertRejects(() => fetch(url, { client }));
  assertEquals(a.seen.length, 1);
});
