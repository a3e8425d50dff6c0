/**
 * Red team of the module cache: archives and sources a hostile module
 * registry or archive host could send, beyond what modules_test covers.
 * Each test names the attack; every one failed on the code before its fix.
 */
import { assert, assertEquals, assertMatch } from "../lib/deps/assert.ts";
import { join } from "../lib/deps/path.ts";
import { HostileArchiveError, unpackTarGz } from "../lib/modules/unpack.ts";
import { fetchGitCommit, GitFetchError } from "../lib/modules/git_fetch.ts";
import { EgressPolicy } from "../lib/upstream/egress.ts";
import { findGitBackend, serveRepo } from "./_git_server.ts";
import { parseModuleSource } from "../lib/modules/source_address.ts";
import { makeTarGz, startFakeModuleRegistry, type TarEntry } from "./fake_module_registry.ts";
import { bytesOf, makeTestApp, sha256Hex, tempDir } from "./_helpers.ts";
import { importTree } from "../lib/commands/import.ts";
import { buildConfig } from "../lib/config/config.ts";

const H = "registry.terraform.io";

/** The error `p` rejects with (the test fails when it resolves). */
async function rejection(p: Promise<unknown>): Promise<Error> {
  try {
    await p;
  } catch (e) {
    return e as Error;
  }
  throw new Error("expected a rejection");
}

/** A stream of the bytes, in one chunk. */
function streamOf(b: Uint8Array): ReadableStream<Uint8Array> {
  return new Blob([b as Uint8Array<ArrayBuffer>]).stream();
}

/** Entry types makeTarGz does not name but writes as given (PAX, GNU longname). */
function raw(name: string, type: string, content: string | Uint8Array): TarEntry {
  return { name, type: type as "0", content };
}

Deno.test("tar: bytes carried by directory entries count toward the size bound (not buffered unbounded)", async () => {
  await using d = await tempDir();
  // A directory entry whose header claims 3 MiB of payload: skipped, but read
  // into memory whole before; now counted like file content.
  const gz = await makeTarGz([{ name: "d/", type: "5", content: new Uint8Array(3 * 2 ** 20) }]);
  const err = await rejection(
    unpackTarGz(streamOf(gz), d.path, { maxBytes: 2 ** 20, maxFiles: 100 }),
  );
  assert(err instanceof HostileArchiveError, String(err));
  assertMatch(err.message, /size limit/);
});

Deno.test("tar: a PAX global header is bounded like a PAX extended header", async () => {
  await using d = await tempDir();
  const gz = await makeTarGz([
    raw("pax_global_header", "g", new Uint8Array(200 * 1024)),
    { name: "a.tf", content: "x" },
  ]);
  const err = await rejection(
    unpackTarGz(streamOf(gz), d.path, { maxBytes: 2 ** 20, maxFiles: 100 }),
  );
  assert(err instanceof HostileArchiveError, String(err));
  assertMatch(err.message, /extended header/);
});

Deno.test("tar: PAX and GNU longname headers count toward the entry bound (a stream of headers ends)", async () => {
  await using d = await tempDir();
  const entries: TarEntry[] = [];
  // 4 × maxFiles is the entry bound: 50 header-only entries with maxFiles 5.
  for (let i = 0; i < 50; i++) entries.push(raw("h", i % 2 ? "x" : "L", `name${i}`));
  entries.push({ name: "a.tf", content: "x" });
  const gz = await makeTarGz(entries);
  const err = await rejection(
    unpackTarGz(streamOf(gz), d.path, { maxBytes: 2 ** 20, maxFiles: 5 }),
  );
  assert(err instanceof HostileArchiveError, String(err));
  assertMatch(err.message, /more than 20 entries/);
});

Deno.test("tar: a well-formed archive with PAX path and a GNU longname still unpacks", async () => {
  await using d = await tempDir();
  const long = `${"a".repeat(120)}/b.tf`;
  const enc = new TextEncoder();
  const rec = (k: string, v: string) => {
    const body = ` ${k}=${v}\n`;
    let len = enc.encode(body).length + 1;
    while (String(len).length + enc.encode(body).length !== len) len++;
    return `${len}${body}`;
  };
  const gz = await makeTarGz([
    raw("PaxHeaders/x", "x", rec("path", long)),
    { name: "ignored", content: "pax\n" },
    raw("././@LongLink", "L", "dir/gnu.tf\0"),
    { name: "ignored2", content: "gnu\n" },
  ]);
  const got = await unpackTarGz(streamOf(gz), d.path, { maxBytes: 2 ** 20, maxFiles: 5 });
  assertEquals(got.files, 2);
  assertEquals(await Deno.readTextFile(join(d.path, long)), "pax\n");
  assertEquals(await Deno.readTextFile(join(d.path, "dir/gnu.tf")), "gnu\n");
  assert(!(await Deno.stat(join(d.path, "ignored")).catch(() => null)));
});

const GIT = await findGitBackend();
if (!GIT) {
  // deno-lint-ignore no-console
  console.log("SKIP: modules_hostile_test (git parts): git http-backend is not installed");
}

/** An egress policy letting through only the host of `url` (no proxy from the environment). */
function onlyTo(url: string): EgressPolicy {
  return new EgressPolicy(
    { allowPrivateNetworks: false, egressAllow: [new URL(url).host] },
    { exemptOrigins: [], env: () => undefined },
  );
}

/** Bytes nothing compresses (a blob git cannot shrink in its pack). */
function noise(n: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i += 65536) crypto.getRandomValues(b.subarray(i, i + 65536));
  return b;
}

Deno.test({
  name:
    "git: a pack of few objects is bounded as it arrives too (git would unpack it to loose objects nobody watched)",
  ignore: !GIT,
  async fn() {
    await using d = await tempDir();
    // Three objects (commit, tree, blob): under git's unpackLimit of 100, so
    // git explodes the pack into .git/objects/xx/ instead of keeping it.
    await using server = await serveRepo(d.path, "big", { "blob.bin": noise(3 * 2 ** 20) }, "v1");
    const egress = onlyTo(server.url);
    const work = join(d.path, "work");
    await Deno.mkdir(work);
    const err = await rejection(
      fetchGitCommit(new URL(`${server.url}big.git`), "v1", work, {
        egress,
        maxBytes: 2 ** 20,
        timeoutMs: 20_000,
      }),
    );
    assert(err instanceof GitFetchError, String(err));
    // The transfer bound stopped it, not the tree check after a full download.
    assertMatch(err.message, /transfer over 1048576 bytes/);
  },
});

Deno.test({
  name:
    "git: a ref with URL syntax in it (v1&sshkey=x, a#b) is recorded encoded: the moved-tag check asks for the same ref",
  ignore: !GIT,
  async fn() {
    await using d = await tempDir();
    const ref = "v1&sshkey=x#y";
    await using server = await serveRepo(d.path, "net", { "main.tf": "# net\n" }, ref);
    await using reg = await startFakeModuleRegistry({
      modules: {
        "example/net/aws": {
          "1.0.0": `git::${server.url}net.git?ref=${encodeURIComponent(ref)}`,
        },
      },
    });
    const t = await makeTestApp(undefined, join(d.path, "cache"), {
      upstreams: { [H]: { url: reg.url } },
      egressAllow: [new URL(server.url).host, new URL(reg.url).host],
    });
    try {
      const base = `/v1/modules/${H}/example/net/aws`;
      const a = await t.get(`${base}/1.0.0/module.tar.gz`);
      assertEquals(a.status, 200);
      await bytesOf(a);
      const record = JSON.parse(
        await Deno.readTextFile(join(d.path, "cache/modules", H, "example/net/aws/1.0.0.json")),
      );
      const again = parseModuleSource(record.source);
      assertEquals(again.kind, "git", record.source);
      assertEquals(again.kind === "git" && again.ref, ref);
    } finally {
      await t.app.close();
    }
  },
});

Deno.test("source: git refs with control characters, '..', '@{' or thousands of characters are not fetched", () => {
  for (
    const ref of ["v1%00", "v1%0Aevil", "a..b", "v1@%7B-1%7D", "x".repeat(2000), "%7F"]
  ) {
    const s = parseModuleSource(`git::https://example.com/r.git?ref=${ref}`);
    assertEquals(s.kind, "other", ref);
  }
  const ok = parseModuleSource("git::https://example.com/r.git?ref=release/v1.2.3");
  assertEquals(ok.kind === "git" && ok.ref, "release/v1.2.3");
});

Deno.test("download: a location with CR/LF or NUL from the registry is a 502, never a header (was a 500)", async () => {
  await using d = await tempDir();
  await using reg = await startFakeModuleRegistry({
    jsonLocation: true,
    modules: {
      "example/net/aws": {
        "1.0.0": "s3::https://bucket.example/y.zip\r\nSet-Cookie: a=b",
        "2.0.0": "https://archive.example/m.tar.gz\u0000",
      },
    },
  });
  const t = await makeTestApp(undefined, join(d.path, "cache"), {
    upstreams: { [H]: { url: reg.url } },
    egressAllow: [new URL(reg.url).host],
  });
  try {
    for (const v of ["1.0.0", "2.0.0"]) {
      const r = await t.get(`/v1/modules/${H}/example/net/aws/${v}/download`);
      const body = new TextDecoder().decode(await bytesOf(r));
      assertEquals(r.status, 502, body);
      assertEquals(r.headers.get("x-terraform-get"), null);
      assertEquals(r.headers.get("set-cookie"), null);
      assertMatch(body, /control character/);
    }
    assertEquals(t.log.records.filter((r) => r.msg === "internal error").length, 0);
  } finally {
    await t.app.close();
  }
});

Deno.test({
  name:
    "git: a redirect from the vetted host to one nobody vetted is not followed (the other server sees nothing)",
  ignore: !GIT,
  async fn() {
    await using d = await tempDir();
    // The real repository is on a server the egress policy does not allow
    // (stands in for 169.254.169.254); the allowed one only redirects there.
    await using hidden = await serveRepo(d.path, "net", { "main.tf": "# net\n" }, "v1");
    const redirects: string[] = [];
    const front = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (req) => {
      const u = new URL(req.url);
      redirects.push(u.pathname);
      return new Response(null, {
        status: 302,
        headers: { location: `${hidden.url}${u.pathname.slice(1)}${u.search}` },
      });
    });
    try {
      const frontUrl = `http://127.0.0.1:${(front.addr as Deno.NetAddr).port}/`;
      const egress = onlyTo(frontUrl);
      const work = join(d.path, "work");
      await Deno.mkdir(work);
      const err = await rejection(
        fetchGitCommit(new URL(`${frontUrl}net.git`), "v1", work, {
          egress,
          maxBytes: 2 ** 20,
          timeoutMs: 20_000,
        }),
      );
      assert(err instanceof GitFetchError, String(err));
      assert(redirects.length > 0, "git asked the vetted host");
      assertEquals(hidden.requests, [], "and never the one it redirected to");
    } finally {
      await front.shutdown();
    }
  },
});

Deno.test("import: a bundle's module record with a hostile subdir or commit is refused (the subdir reached X-Terraform-Get)", async () => {
  await using d = await tempDir();
  const tree = join(d.path, "tree");
  const side = join(tree, ".repoxy/modules", H, "evil/m/aws");
  await Deno.mkdir(side, { recursive: true });
  const tgz = await makeTarGz([{ name: "a.tf", content: "x\n" }]);
  const write = async (version: string, extra: Record<string, unknown>) => {
    await Deno.writeFile(join(side, `${version}.tar.gz`), tgz);
    await Deno.writeTextFile(
      join(side, `${version}.json`),
      JSON.stringify({
        sha256: sha256Hex(tgz),
        size: tgz.length,
        source: "https://x/y.tgz",
        subdir: "",
        fetchedAt: 1,
        ...extra,
      }),
    );
  };
  await write("1.0.0", { subdir: "../../outside" });
  await write("1.0.1", { subdir: "x?archive=zip" });
  await write("1.0.2", { subdir: "a\r\nx-evil: 1" });
  await write("1.0.3", { commit: "--upload-pack=sh" });
  await write("1.0.4", { subdir: "modules/vpc", commit: "ab".repeat(20) });
  const config = await buildConfig({ cacheDir: join(d.path, "cache"), offline: true });
  const im = await importTree(config, tree);
  assertEquals(im.modules.imported, 1, im.modules.refused.join("\n"));
  assertEquals(im.modules.refused.length, 4);
  const t = await makeTestApp(undefined, join(d.path, "cache"), {
    offline: true,
    upstreams: { [H]: { url: "http://127.0.0.1:9" } },
  });
  try {
    const base = `/v1/modules/${H}/evil/m/aws`;
    for (const v of ["1.0.0", "1.0.1", "1.0.2", "1.0.3"]) {
      const r = await t.get(`${base}/${v}/download`);
      await bytesOf(r);
      assertEquals(r.status, 404, v);
    }
    const ok = await t.get(`${base}/1.0.4/download`);
    assertEquals(ok.status, 204, new TextDecoder().decode(await bytesOf(ok)));
    assertEquals(ok.headers.get("x-terraform-get"), `${base}/1.0.4/module.tar.gz//modules/vpc`);
  } finally {
    await t.app.close();
  }
});

Deno.test({
  name:
    "moved-tag checks: many download answers at once start one git ls-remote per version, not one each (metadataTtl 0)",
  ignore: !GIT,
  async fn() {
    await using d = await tempDir();
    await using server = await serveRepo(d.path, "net", { "main.tf": "# net\n" }, "v1");
    await using reg = await startFakeModuleRegistry({
      modules: { "example/net/aws": { "1.0.0": `git::${server.url}net.git?ref=v1` } },
    });
    const t = await makeTestApp(undefined, join(d.path, "cache"), {
      upstreams: { [H]: { url: reg.url } },
      egressAllow: [new URL(server.url).host, new URL(reg.url).host],
      metadataTtl: 0,
    });
    try {
      const base = `/v1/modules/${H}/example/net/aws`;
      await bytesOf(await t.get(`${base}/1.0.0/module.tar.gz`));
      await t.app.settle();
      const before = server.requests.length;
      const answers = await Promise.all(
        Array.from({ length: 20 }, () => t.get(`${base}/1.0.0/download`)),
      );
      for (const a of answers) {
        assertEquals(a.status, 204);
        await bytesOf(a);
      }
      await t.app.settle();
      // One ls-remote is one or two HTTP requests (refs advertisement, ls-refs);
      // a loaded machine may let one check end before the burst does (before: 10+).
      const spawned = server.requests.length - before;
      assert(spawned >= 1 && spawned <= 4, `${spawned} git requests for 20 answers`);
    } finally {
      await t.app.close();
    }
  },
});

Deno.test({
  name:
    "git: at the deadline git's helpers (git-remote-http) are killed too, and the fetch ends (a trickling host kept it open forever)",
  ignore: !GIT,
  async fn() {
    await using d = await tempDir();
    // Trickles 4 KiB/s of advertisement forever: above curl's speed floor
    // (1 KiB/s), so only Repoxy's deadline can end the fetch.
    const timers = new Set<ReturnType<typeof setInterval>>();
    const host = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, () =>
      new Response(
        new ReadableStream<Uint8Array>({
          start(c) {
            const t = setInterval(() => {
              try {
                c.enqueue(new Uint8Array(1024).fill(0x30));
              } catch {
                clearInterval(t);
                timers.delete(t);
              }
            }, 250);
            timers.add(t);
          },
          cancel() {
            for (const t of timers) clearInterval(t);
            timers.clear();
          },
        }),
        { headers: { "content-type": "application/x-git-upload-pack-advertisement" } },
      ));
    const url = `http://127.0.0.1:${(host.addr as Deno.NetAddr).port}/`;
    const egress = onlyTo(url);
    const work = join(d.path, "work");
    await Deno.mkdir(work);
    let fence: ReturnType<typeof setTimeout> | undefined;
    try {
      const outcome = await Promise.race([
        rejection(fetchGitCommit(new URL(`${url}net.git`), "v1", work, {
          egress,
          maxBytes: 2 ** 20,
          timeoutMs: 1000,
        })),
        // Not a timing assertion: before the fix the fetch never ended at all.
        new Promise<string>((r) => fence = setTimeout(() => r("still running"), 25_000)),
      ]);
      assert(outcome instanceof GitFetchError, String(outcome));
      assertMatch(outcome.message, /^git fetch: timed out/);
    } finally {
      clearTimeout(fence);
      for (const t of timers) clearInterval(t);
      await host.shutdown();
    }
  },
});
