/**
 * Modules as a pull-through cache, through the handler (no client socket):
 * version lists cached, git and archive sources fetched once and stored as
 * Repoxy's own deterministic archive, moved tags pinned, other sources
 * passed through, hostile sources refused with nothing stored, offline.
 */
import { assert, assertEquals, assertMatch } from "../lib/deps/assert.ts";
import { join } from "../lib/deps/path.ts";
import { findGitBackend, type GitServer, makeRepo, moveTag, serveRepo } from "./_git_server.ts";
import { makeTarGz, startFakeModuleRegistry } from "./fake_module_registry.ts";
import { bytesOf, makeTestApp, sha256Hex, tempDir } from "./_helpers.ts";

const GIT = await findGitBackend();
if (!GIT) {
  // deno-lint-ignore no-console
  console.log("SKIP: modules_test: git http-backend is not installed");
}

const H = "registry.terraform.io";
const NET = {
  "modules/vpc/main.tf": 'variable "cidr" {}\n',
  "README.md": "net v1\n",
  "x.sh": "#!/bin/sh\n",
};

/** A registry, a git server with `net.git` tagged v1.0.0, and an app on both. */
async function setup(
  dir: string,
  opts: { egress?: boolean; raw?: Record<string, unknown>; location?: (git: GitServer) => string } =
    {},
) {
  const git = await serveRepo(dir, "net", NET, "v1.0.0");
  const { root, commit } = git;
  const reg = await startFakeModuleRegistry({
    modules: {
      "example/net/aws": {
        "1.0.0": opts.location?.(git) ?? `git::${git.url}net.git//modules/vpc?ref=v1.0.0`,
      },
    },
  });
  const t = await makeTestApp(undefined, join(dir, "cache"), {
    upstreams: { [H]: { url: reg.url } },
    egressAllow: opts.egress === false ? [] : [new URL(git.url).host, new URL(reg.url).host],
    ...opts.raw,
  });
  return {
    commit,
    git,
    reg,
    t,
    root,
    async [Symbol.asyncDispose]() {
      await t.app.close();
      await git.close();
      await reg.close();
    },
  };
}

/** The files of a .tar.gz as path → content (via the system tar, not our reader). */
async function untar(bytes: Uint8Array, into: string): Promise<Record<string, string>> {
  await Deno.mkdir(into, { recursive: true });
  await Deno.writeFile(`${into}.tgz`, bytes);
  const out = await new Deno.Command("tar", { args: ["-xzf", `${into}.tgz`, "-C", into] }).output();
  assert(out.success, "system tar reads the archive");
  const files: Record<string, string> = {};
  const walk = async (rel: string) => {
    for await (const e of Deno.readDir(join(into, rel))) {
      const p = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory) await walk(p);
      else files[p] = await Deno.readTextFile(join(into, p));
    }
  };
  await walk("");
  return files;
}

const base = `/v1/modules/${H}/example/net/aws`;

Deno.test({
  name:
    "git module: 204 to Repoxy's archive with //subdir, fetched once at depth 1, deterministic, pinned commit",
  ignore: !GIT,
  async fn() {
    await using dir = await tempDir();
    await using s = await setup(dir.path);
    const { t } = s;

    const v = await t.get(`${base}/versions`);
    assertEquals(v.status, 200);
    assertEquals(JSON.parse(new TextDecoder().decode(await bytesOf(v))), {
      modules: [{ versions: [{ version: "1.0.0" }] }],
    });
    const again = await t.get(`${base}/versions`);
    await bytesOf(again);
    assertEquals(s.reg.count("/v1/modules/example/net/aws/versions"), 1, "second list from refs/");

    const d = await t.get(`${base}/1.0.0/download`);
    assertEquals(d.status, 204);
    assertEquals(
      d.headers.get("x-terraform-get"),
      `/v1/modules/${H}/example/net/aws/1.0.0/module.tar.gz//modules/vpc`,
    );
    const a = await t.get(`${base}/1.0.0/module.tar.gz`);
    assertEquals(a.status, 200);
    const bytes = await bytesOf(a);
    assertEquals(await untar(bytes, join(dir.path, "x1")), NET, "the tree, no .git");
    const record = JSON.parse(
      await Deno.readTextFile(join(dir.path, "cache/modules", H, "example/net/aws/1.0.0.json")),
    );
    assertEquals(record.commit, s.commit);
    assertEquals(record.sha256, sha256Hex(bytes));
    assertEquals(record.size, bytes.length);
    assertEquals(record.subdir, "modules/vpc");
    assertEquals(
      await Deno.readFile(join(dir.path, "cache/modules", H, "example/net/aws/1.0.0.tar.gz")),
      bytes,
    );
    // One fetch, shallow.
    assertEquals(s.git.fetches, [{ deepen: "1" }]);

    // Everything again: no registry download answer, no git request.
    const gitBefore = s.git.requests.length;
    const dlBefore = s.reg.count("/v1/modules/example/net/aws/1.0.0/download");
    const d2 = await t.get(`${base}/1.0.0/download`);
    assertEquals(d2.headers.get("x-repoxy-cache"), "hit");
    assertEquals(await bytesOf(await t.get(`${base}/1.0.0/module.tar.gz`)), bytes);
    await t.app.settle();
    assertEquals(s.reg.count("/v1/modules/example/net/aws/1.0.0/download"), dlBefore);
    // At most the moved-tag check (ls-remote), never another fetch.
    assert(s.git.requests.length - gitBefore <= 2);
    assertEquals(s.git.fetches.length, 1);

    // Determinism: the same commit packed by another cache gives the same bytes.
    await using dir2 = await tempDir();
    const t2 = await makeTestApp(undefined, join(dir2.path, "cache"), {
      upstreams: { [H]: { url: s.reg.url } },
      egressAllow: [new URL(s.git.url).host],
    });
    try {
      assertEquals(
        sha256Hex(await bytesOf(await t2.get(`${base}/1.0.0/module.tar.gz`))),
        sha256Hex(bytes),
      );
    } finally {
      await t2.app.close();
    }
  },
});

Deno.test({
  name: "a moved upstream tag keeps serving the pinned commit, logged and on the status page",
  ignore: !GIT,
  async fn() {
    await using dir = await tempDir();
    await using s = await setup(dir.path, { raw: { metadataTtl: 0 } });
    const { t } = s;
    await bytesOf(await t.get(`${base}/1.0.0/download`));
    const pinned = await bytesOf(await t.get(`${base}/1.0.0/module.tar.gz`));
    const moved = await moveTag(s.root, "net", { "README.md": "net v1 MOVED\n" }, "v1.0.0");
    assert(moved !== s.commit);

    const d = await t.get(`${base}/1.0.0/download`);
    assertEquals(d.status, 204);
    await t.app.settle();
    assertEquals(await bytesOf(await t.get(`${base}/1.0.0/module.tar.gz`)), pinned);
    assertEquals((await untar(pinned, join(dir.path, "p")))["README.md"], "net v1\n");
    const line = t.log.records.find((r) =>
      r.msg === "module tag moved upstream; serving the pinned commit"
    );
    assert(line, t.log.lines.join("\n"));
    assertEquals(line.pinned, s.commit);
    assertEquals(line.upstream, moved);
    const page = new TextDecoder().decode(
      await bytesOf(await t.get("/", { headers: { accept: "text/html" } })),
    );
    assert(page.includes(moved.slice(0, 12)), "status page names the moved tag's new commit");
    assert(page.includes(s.commit.slice(0, 12)), "and the pinned one");
  },
});

Deno.test({
  name:
    "archive module: fetched once, repacked, served; other sources passed through unchanged with a log line",
  ignore: !GIT,
  async fn() {
    await using dir = await tempDir();
    await using s = await setup(dir.path);
    const { t, reg } = s;
    reg.archives.set(
      "store-2.0.0.tar.gz",
      await makeTarGz([
        { name: "store/", type: "5" },
        { name: "store/main.tf", content: "# store\n" },
        { name: "./top.tf", content: "# top\n", mode: 0o755 },
      ]),
    );
    reg.modules.set(
      "example/store/aws",
      new Map([
        ["2.0.0", `${reg.url}archives/store-2.0.0.tar.gz//store`],
        ["3.0.0", "s3::https://s3-eu-west-1.amazonaws.com/bucket/store.zip"],
      ]),
    );
    const sb = `/v1/modules/${H}/example/store/aws`;
    const d = await t.get(`${sb}/2.0.0/download`);
    assertEquals(d.headers.get("x-terraform-get"), `${sb.slice(0)}/2.0.0/module.tar.gz//store`);
    const bytes = await bytesOf(await t.get(`${sb}/2.0.0/module.tar.gz`));
    assertEquals(await untar(bytes, join(dir.path, "a")), {
      "store/main.tf": "# store\n",
      "top.tf": "# top\n",
    });
    await bytesOf(await t.get(`${sb}/2.0.0/module.tar.gz`));
    assertEquals(reg.count("/archives/"), 1, "archive fetched once");

    const other = await t.get(`${sb}/3.0.0/download`);
    assertEquals(other.status, 204);
    assertEquals(
      other.headers.get("x-terraform-get"),
      "s3::https://s3-eu-west-1.amazonaws.com/bucket/store.zip",
    );
    const why = t.log.records.find((r) => r.msg === "module source passed through uncached");
    assertMatch(String(why?.reason), /s3:: sources are not fetched/);
  },
});

Deno.test({
  name:
    "hostile module sources: private git host, oversized and escaping archives: 502, nothing stored",
  ignore: !GIT,
  async fn() {
    await using dir = await tempDir();
    // No egressAllow for the git server: 127.0.0.1 on another port is internal.
    await using s = await setup(dir.path, { egress: false });
    const { t, reg } = s;
    const d = await t.get(`${base}/1.0.0/download`);
    assertEquals(d.status, 204);
    const a = await t.get(`${base}/1.0.0/module.tar.gz`);
    assertEquals(a.status, 502);
    assertMatch(new TextDecoder().decode(await bytesOf(a)), /refused to fetch from 127\.0\.0\.1/);
    assertEquals(s.git.requests.length, 0, "git never contacted the private address");

    const evil: Record<string, Parameters<typeof makeTarGz>[0]> = {
      "dotdot": [{ name: "ok.tf", content: "x" }, { name: "../escape.tf", content: "pwned" }],
      "abs": [{ name: "/tmp/abs-escape.tf", content: "pwned" }],
      "link": [{ name: "l", type: "2", linkname: "/etc" }, { name: "l/passwd", content: "x" }],
      "hard": [{ name: "h", type: "1", linkname: "../../etc/passwd" }],
      "big": [{ name: "big.bin", content: new Uint8Array(300 * 1024).fill(7) }],
    };
    const mods = new Map<string, string>();
    for (const name of Object.keys(evil)) {
      reg.archives.set(`${name}.tar.gz`, await makeTarGz(evil[name]!));
      mods.set(`1.0.${Object.keys(evil).indexOf(name)}`, `${reg.url}archives/${name}.tar.gz`);
    }
    reg.modules.set("evil/m/aws", mods);
    // A second app with a small archive bound and the registry's archives allowed.
    await using dir2 = await tempDir();
    const t2 = await makeTestApp(undefined, join(dir2.path, "cache"), {
      upstreams: { [H]: { url: reg.url } },
      limits: { archiveSize: "100KB" },
    });
    try {
      for (const [version] of mods) {
        const r = await t2.get(`/v1/modules/${H}/evil/m/aws/${version}/module.tar.gz`);
        assertEquals(r.status, 502, version);
        await bytesOf(r);
      }
      // The compressed "big" archive is small; its content is over the bound.
      assertEquals(reg.count("/archives/"), Object.keys(evil).length);
      const stored: string[] = [];
      for await (const e of Deno.readDir(join(dir2.path, "cache"))) stored.push(e.name);
      assert(!stored.includes("modules"), `nothing stored: ${stored}`);
      assert(!await Deno.stat("/tmp/abs-escape.tf").then(() => true, () => false));
      assert(!await Deno.stat(join(dir2.path, "cache/escape.tf")).then(() => true, () => false));
      assertEquals(t2.app.modules.stats.refused, Object.keys(evil).length);
    } finally {
      await t2.app.close();
    }
  },
});

Deno.test({
  name: "offline: stored module versions, download answers and archives served with no upstream",
  ignore: !GIT,
  async fn() {
    await using dir = await tempDir();
    let pinned: Uint8Array;
    {
      await using s = await setup(dir.path);
      await bytesOf(await s.t.get(`${base}/versions`));
      await bytesOf(await s.t.get(`${base}/1.0.0/download`));
      pinned = await bytesOf(await s.t.get(`${base}/1.0.0/module.tar.gz`));
    }
    const t = await makeTestApp(undefined, join(dir.path, "cache"), {
      upstreams: { [H]: { url: "http://127.0.0.1:9/" } },
      offline: true,
    });
    try {
      const v = await t.get(`${base}/versions`);
      assertEquals(v.status, 200);
      assertMatch(new TextDecoder().decode(await bytesOf(v)), /"1\.0\.0"/);
      const d = await t.get(`${base}/1.0.0/download`);
      assertEquals(d.status, 204);
      assertMatch(d.headers.get("x-terraform-get")!, /module\.tar\.gz\/\/modules\/vpc$/);
      assertEquals(await bytesOf(await t.get(`${base}/1.0.0/module.tar.gz`)), pinned);
      const missing = await t.get(`${base}/9.9.9/download`);
      assertEquals(missing.status, 404);
      await bytesOf(missing);
      assertEquals(t.upstream.length, 0);
    } finally {
      await t.app.close();
    }
  },
});

Deno.test({
  name:
    "client auth applies to modules: token rules hide them, the archive link is signed and works without a token",
  ignore: !GIT,
  async fn() {
    await using dir = await tempDir();
    const ALL = "all-token-0123456789abcdef";
    const OTHER = "other-token-0123456789abcdef";
    await using s = await setup(dir.path, {
      raw: {
        auth: {
          tokens: [{ name: "all", token: ALL }, {
            name: "other",
            token: OTHER,
            namespaces: ["other"],
          }],
        },
      },
    });
    const { t } = s;
    const as = (tok: string) => ({ headers: { authorization: `Bearer ${tok}` } });
    assertEquals(
      (await t.get(`${base}/versions`).then(async (r) => (await bytesOf(r), r))).status,
      401,
    );
    const hidden = await t.get(`${base}/versions`, as(OTHER));
    assertEquals(hidden.status, 404);
    await bytesOf(hidden);
    const d = await t.get(`${base}/1.0.0/download`, as(ALL));
    assertEquals(d.status, 204);
    const loc = d.headers.get("x-terraform-get")!;
    assertMatch(loc, /^\/v1\/modules\/.*\/1\.0\.0\/module\.tar\.gz\/\/modules\/vpc\?.+/);
    // go-getter moves the query back onto the URL and keeps the subdir apart.
    const [path, query] = [loc.slice(0, loc.indexOf("//modules/vpc")), loc.slice(loc.indexOf("?"))];
    const a = await t.get(`${path}${query}`);
    assertEquals(a.status, 200);
    assertEquals((await untar(await bytesOf(a), join(dir.path, "auth")))["README.md"], "net v1\n");
    const bare = await t.get(path);
    assertEquals(bare.status, 401, "no link, no token: refused");
    await bytesOf(bare);
    // A changed character early in the query (a last base64 character may only carry padding bits).
    const forged = await t.get(
      `${path}${query.replace(/sig=(.)/, (_, c) => `sig=${c === "A" ? "B" : "A"}`)}`,
    );
    assertEquals(forged.status, 403);
    await bytesOf(forged);
  },
});

Deno.test({
  name:
    "a git tree over limits.archiveSize is refused before checkout (a small pack of compressible blobs)",
  ignore: !GIT,
  async fn() {
    await using dir = await tempDir();
    await using s = await setup(dir.path, { raw: { limits: { archiveSize: "100KB" } } });
    await makeRepo(s.root, "bomb", { "zeros.bin": new Uint8Array(2 * 2 ** 20) }, "v1.0.0");
    s.reg.modules.set(
      "example/bomb/aws",
      new Map([["1.0.0", `git::${s.git.url}bomb.git?ref=v1.0.0`]]),
    );
    const r = await s.t.get(`/v1/modules/${H}/example/bomb/aws/1.0.0/module.tar.gz`);
    assertEquals(r.status, 502);
    assertMatch(new TextDecoder().decode(await bytesOf(r)), /over the bound/);
    assertEquals(s.git.fetches.length, 1, "the pack itself was small and fetched");
    assert(!await Deno.stat(join(dir.path, "cache/modules")).then(() => true, () => false));
    assertEquals(s.t.app.modules.stats.refused, 1);
  },
});

Deno.test("module sources are fetched a few at a time, however many download answers are asked for", async () => {
  await using dir = await tempDir();
  let inFlight = 0;
  let most = 0;
  let open!: () => void;
  const gate = new Promise<void>((r) => open = r);
  await using reg = await startFakeModuleRegistry({
    beforeArchive: async () => {
      most = Math.max(most, ++inFlight);
      await gate;
      inFlight--;
    },
  });
  const versions = new Map<string, string>();
  for (let i = 0; i < 10; i++) {
    reg.archives.set(`${i}.tgz`, await makeTarGz([{ name: "main.tf", content: `# ${i}\n` }]));
    versions.set(`1.0.${i}`, `${reg.url}archives/${i}.tgz`);
  }
  reg.modules.set("example/many/aws", versions);
  const t = await makeTestApp(undefined, join(dir.path, "cache"), {
    upstreams: { [H]: { url: reg.url } },
  });
  try {
    const answers = await Promise.all(
      [...versions.keys()].map((v) => t.get(`/v1/modules/${H}/example/many/aws/${v}/download`)),
    );
    for (const a of answers) assertEquals(a.status, 204);
    // Every fetch started in the background; let them queue up at the gate.
    while (reg.count("/archives/") < 4) await new Promise((r) => setTimeout(r, 10));
    await new Promise((r) => setTimeout(r, 100));
    assertEquals(reg.count("/archives/"), 4, "only four fetches at once");
    open();
    await t.app.settle();
    assertEquals(most, 4);
    assertEquals(reg.count("/archives/"), 10);
    assertEquals(t.app.modules.stored().length, 10);
  } finally {
    await t.app.close();
  }
});

Deno.test({
  name: "git connects only to the address the egress policy vetted (pinned: no lookup of its own)",
  ignore: !GIT,
  async fn() {
    await using dir = await tempDir();
    // "git.invalid" exists only in the injected resolver: git could not reach it
    // by its own lookup, only through the pinned address.
    await using s = await setup(dir.path, {
      egress: false,
      location: (git) => `git::http://git.invalid:${new URL(git.url).port}/net.git?ref=v1.0.0`,
    });
    const t = await makeTestApp(undefined, join(dir.path, "cache2"), {
      upstreams: { [H]: { url: s.reg.url } },
      egressAllow: ["127.0.0.0/8"],
    }, { resolve: (h) => Promise.resolve(h === "git.invalid" ? ["127.0.0.1"] : []) });
    try {
      const r = await t.get(`${base}/1.0.0/module.tar.gz`);
      assertEquals(r.status, 200, t.log.lines.join("\n"));
      assertEquals((await untar(await bytesOf(r), join(dir.path, "pin")))["README.md"], "net v1\n");
      assertEquals(s.git.fetches.length, 1);
    } finally {
      await t.app.close();
    }
    // The same name resolving to an internal address without an allow rule: refused.
    const t2 = await makeTestApp(undefined, join(dir.path, "cache3"), {
      upstreams: { [H]: { url: s.reg.url } },
    }, { resolve: (h) => Promise.resolve(h === "git.invalid" ? ["10.1.2.3"] : []) });
    try {
      const r = await t2.get(`${base}/1.0.0/module.tar.gz`);
      assertEquals(r.status, 502);
      assertMatch(new TextDecoder().decode(await bytesOf(r)), /resolves to 10\.1\.2\.3/);
      assertEquals(s.git.fetches.length, 1);
    } finally {
      await t2.app.close();
    }
  },
});

Deno.test("module version lists: one upstream request for concurrent askers, kept within metadataTtl, stale when the registry fails", async () => {
  await using dir = await tempDir();
  await using reg = await startFakeModuleRegistry({
    modules: { "example/net/aws": { "1.0.0": "s3::https://b/x.zip" } },
  });
  let now = Date.UTC(2026, 0, 1);
  const t = await makeTestApp(undefined, join(dir.path, "cache"), {
    upstreams: { [H]: { url: reg.url } },
    metadataTtl: "30s",
  }, { now: () => now });
  try {
    const all = await Promise.all(Array.from({ length: 8 }, () => t.get(`${base}/versions`)));
    for (const r of all) {
      assertEquals(r.status, 200);
      await bytesOf(r);
    }
    assertEquals(reg.count("/v1/modules/example/net/aws/versions"), 1);
    now += 10_000;
    await bytesOf(await t.get(`${base}/versions`));
    assertEquals(reg.count("/v1/modules/example/net/aws/versions"), 1, "fresh for metadataTtl");
    now += 30_000;
    reg.modules.get("example/net/aws")!.set("1.1.0", "s3::https://b/y.zip");
    const v = await t.get(`${base}/versions`);
    assertMatch(new TextDecoder().decode(await bytesOf(v)), /1\.1\.0/);
    assertEquals(reg.count("/v1/modules/example/net/aws/versions"), 2, "refreshed after it");
    await reg.close();
    now += 60_000;
    const stale = await t.get(`${base}/versions`);
    assertEquals(stale.status, 200);
    assertEquals(stale.headers.get("x-repoxy-cache"), "stale");
    assertMatch(new TextDecoder().decode(await bytesOf(stale)), /1\.1\.0/);
  } finally {
    await t.app.close();
  }
});

Deno.test({
  name:
    "a stored module archive that went missing or was truncated is fetched again, not answered as stored for good",
  ignore: !GIT,
  async fn() {
    await using dir = await tempDir();
    await using s = await setup(dir.path);
    const { t } = s;
    const first = await bytesOf(await t.get(`${base}/1.0.0/module.tar.gz`));
    const file = join(dir.path, "cache/modules", H, "example/net/aws/1.0.0.tar.gz");
    await Deno.truncate(file, 100);
    const again = await t.get(`${base}/1.0.0/module.tar.gz`);
    assertEquals(again.status, 200);
    assertEquals(await bytesOf(again), first, "the same commit packs to the same bytes");
    assertEquals(s.git.fetches.length, 2);
    assert(
      t.log.records.some((r) =>
        r.msg === "stored module archive missing or damaged; fetching it again"
      ),
    );
    await Deno.remove(file);
    assertEquals(await bytesOf(await t.get(`${base}/1.0.0/module.tar.gz`)), first);
    assertEquals(s.git.fetches.length, 3);
  },
});
