/**
 * Red team, upstream side: the real `repoxy serve` process against a hostile
 * registry on 127.0.0.1 — internal targets reached through every field and
 * hop a registry controls, lying and encoded metadata bodies, absurd JSON —
 * checking the status codes the README promises (502/504, never 500), that
 * nothing internal is contacted and that the process survives.
 * @module
 */
import { assert, assertEquals, assertMatch } from "../lib/deps/assert.ts";
import { hashZipH1 } from "../lib/integrity/dirhash.ts";
import { loadOpenpgp } from "../lib/deps/openpgp.ts";
import { SignatureError, verifyDetachedSignature } from "../lib/integrity/signature.ts";
import { type ZipFile, ZipFormatError } from "../lib/integrity/zip_reader.ts";
import { join } from "../lib/deps/path.ts";
import { sha256Hex, tempDir } from "./_helpers.ts";
import { spawnRepoxy } from "./_process.ts";
import { internalService, startHostile } from "./hostile_upstream.ts";
import { makeSigningKey, signDetached } from "./_pgp.ts";
import { makeProviderZip } from "./_zip.ts";

const openpgp = await loadOpenpgp();

const H = "registry.terraform.io";
const MAIN = new URL("../main.ts", import.meta.url).pathname;

function versionsDoc(): string {
  return JSON.stringify({
    versions: [{
      version: "1.0.0",
      protocols: ["5.0"],
      platforms: [{ os: "linux", arch: "amd64" }],
    }],
  });
}

async function statusOf(url: string, init?: RequestInit): Promise<number> {
  const res = await fetch(url, init);
  await res.body?.cancel();
  return res.status;
}

async function vmHwmKiB(pid: number): Promise<number> {
  const out = await new Deno.Command("cat", { args: [`/proc/${pid}/status`] }).output();
  const s = new TextDecoder().decode(out.stdout);
  return Number(/VmHWM:\s+(\d+)/.exec(s)?.[1] ?? "0");
}

/** Starts `repoxy serve` (the real process) with `upstreams`. */
async function serve(
  dir: string,
  upstreams: Record<string, { url: string }>,
  extra: Record<string, unknown> = {},
) {
  const config = join(dir, "repoxy.json");
  await Deno.writeTextFile(
    config,
    JSON.stringify({ cacheDir: join(dir, "cache"), upstreams, ...extra }),
  );
  const p = await spawnRepoxy(Deno.execPath(), [
    "run",
    "-P=serve",
    MAIN,
    "serve",
    "--config",
    config,
    "--listen",
    "127.0.0.1:0",
  ]);
  return Object.assign(p, { base: p.url.replace(/\/$/, "") });
}

/**
 * Documents well under limits.metadataDocument (8 MiB) whose parse costs
 * hundreds of MB of heap: 4 MB of nesting, or of empty containers.
 */
const SHAPES: Record<string, () => string> = {
  deep: () => `{"versions":${"[".repeat(2_000_000)}${"]".repeat(2_000_000)}}`,
  deepobj: () => `{"versions":[${'{"a":'.repeat(500_000)}1${"}".repeat(500_000)}]}`,
  wide: () => `{"versions":[${"{},".repeat(1_300_000)}{}]}`,
  wideplat: () => `{"versions":[{"version":"1.0.0","platforms":[${"[],".repeat(1_300_000)}[]]}]}`,
};

Deno.test("red team: upstream JSON that is deep or dense is refused before parsing (502), the server's heap stays small", async () => {
  await using dir = await tempDir();
  const deepDoc = SHAPES.deep!();
  await using up = startHostile((path) => {
    let m = /^\/v1\/providers\/shape\/(\w+)\/versions$/.exec(path);
    if (m && SHAPES[m[1]!]) return new Response(SHAPES[m[1]!]!());
    if (m && m[1] === "dl") return new Response(versionsDoc());
    m = /^\/v1\/providers\/shape\/dl\/1\.0\.0\/download\/linux\/amd64$/.exec(path);
    if (m) return new Response(`{"download_url":${deepDoc.slice(12)}`);
    return Response.json({ errors: ["Not Found"] }, { status: 404 });
  });
  // A second registry whose service discovery document is the deep one.
  const ac = new AbortController();
  const disc = Deno.serve(
    { hostname: "127.0.0.1", port: 0, signal: ac.signal, onListen() {} },
    () => new Response(`{"providers.v1":${deepDoc.slice(12)}`),
  );
  try {
    await using p = await serve(dir.path, {
      [H]: { url: up.url },
      "deep.example": { url: `http://127.0.0.1:${disc.addr.port}` },
    });
    const urls = [
      ...Object.keys(SHAPES).flatMap((k) => [
        `/${H}/shape/${k}/index.json`,
        `/v1/providers/${H}/shape/${k}/versions`,
        `/${H}/shape/${k}/1.0.0.json`,
      ]),
      `/${H}/shape/dl/1.0.0.json`,
      `/v1/providers/${H}/shape/dl/1.0.0/download/linux/amd64`,
      `/${H}/shape/dl/terraform-provider-dl_1.0.0_linux_amd64.zip`,
      `/deep.example/shape/x/index.json`,
    ];
    // One after another: each parse is a separate heap peak.
    const statuses: Record<string, number> = {};
    for (const u of urls) statuses[u] = await statusOf(p.base + u);
    assertEquals(statuses, Object.fromEntries(urls.map((u) => [u, 502])));
    const peak = await vmHwmKiB(p.pid);
    // Before: 380–480 MB for one such request, ~850 MB for this file's set.
    assert(peak < 200 * 1024, `peak RSS ${peak} KiB`);
    assertEquals(await statusOf(`${p.base}/-/healthz`), 200);
    const st = await p.stop("SIGTERM");
    assertEquals(st.code, 0);
  } finally {
    ac.abort();
    await disc.finished;
  }
});

Deno.test("red team: a hostile self-signed registry: internal targets in any field or hop are never contacted, signature bombs cost a few checks (502)", async () => {
  await using dir = await tempDir();
  await using internal = internalService("127.0.0.1");
  const port = internal.port;
  // The same service on IPv6 loopback, where the host has it.
  await using internal6 = await Promise.resolve().then(() => internalService("::1")).catch(() =>
    undefined
  );
  const I = `http://127.0.0.1:${port}`;
  const zipBody = await makeProviderZip("x", "1.0.0", "linux_amd64");
  const sha = sha256Hex(zipBody);
  const key = await makeSigningKey("Hostile");
  const sums = new Map<string, Uint8Array>();
  const sigs = new Map<string, Uint8Array>();
  const sumsOf = async (v: string) => {
    if (!sums.has(v)) {
      const b = new TextEncoder().encode(`${sha}  terraform-provider-${v}_1.0.0_linux_amd64.zip\n`);
      sums.set(v, b);
      sigs.set(v, await signDetached(key.privateKeyArmored, b));
    }
  };
  // download_url spellings of the internal service
  const targets: Record<string, string> = {
    localhost: `http://localhost:${port}/x.zip`,
    localhostdot: `http://localhost.:${port}/x.zip`,
    v6: `http://[::1]:${port}/x.zip`,
    zero: `http://0.0.0.0:${port}/x.zip`,
    short: `http://127.1:${port}/x.zip`,
    dec: `http://2130706433:${port}/x.zip`,
    mapped: `http://[::ffff:127.0.0.1]:${port}/x.zip`,
    userinfo: `http://${new URL(I).host}@127.0.0.1:${port}/x.zip`,
    direct: `${I}/x.zip`,
    v6listener: `http://[::1]:${internal6?.port ?? port}/x.zip`,
    file: "file:///etc/passwd",
    data: "data:application/zip;base64,UEsFBgAAAAAAAAAAAAAAAAAAAAAAAA==",
    schemeless: `//127.0.0.1:${port}/x.zip`,
  };
  let upUrl = "";
  await using up = startHostile(async (path) => {
    let m = /^\/v1\/providers\/ssrf\/(\w+)\/versions$/.exec(path);
    if (m) return new Response(versionsDoc());
    m = /^\/v1\/providers\/ssrf\/(\w+)\/1\.0\.0\/download\/linux\/amd64$/.exec(path);
    if (m) {
      const v = m[1]!;
      await sumsOf(v);
      const doc: Record<string, unknown> = {
        protocols: ["5.0"],
        os: "linux",
        arch: "amd64",
        filename: `terraform-provider-${v}_1.0.0_linux_amd64.zip`,
        "download_url": targets[v] ?? `${upUrl}/files/${v}.zip`,
        "shasums_url": `${upUrl}/files/${v}_SHA256SUMS`,
        "shasums_signature_url": `${upUrl}/files/${v}_SHA256SUMS.sig`,
        shasum: sha,
        "signing_keys": {
          "gpg_public_keys": [{
            "key_id": key.keyId.toUpperCase(),
            "ascii_armor": key.publicKeyArmored,
          }],
        },
      };
      if (v === "redir") doc.download_url = `${upUrl}/redir/3`;
      if (v === "redirfile") doc.download_url = `${upUrl}/redir/0/file:///etc/passwd`;
      if (v === "redirv6") {
        doc.download_url = `${upUrl}/redir/1/http://[::1]:${internal6?.port ?? port}/`;
      }
      if (v === "sums") doc.shasums_url = `${I}/SHA256SUMS`;
      if (v === "sig") doc.shasums_signature_url = `${I}/SHA256SUMS.sig`;
      if (v === "sumsredir") doc.shasums_url = `${upUrl}/redir/2`;
      if (v === "dupkeys") {
        const k = (doc.signing_keys as { gpg_public_keys: unknown[] }).gpg_public_keys[0];
        doc.signing_keys = { gpg_public_keys: Array(5_000).fill(k) };
      }
      return Response.json(doc);
    }
    m = /^\/files\/(\w+)(\.zip|_SHA256SUMS|_SHA256SUMS\.sig)$/.exec(path);
    if (m) {
      await sumsOf(m[1]!);
      if (/^(sigbomb|sigmany|dupkeys)$/.test(m[1]!) && m[2] === "_SHA256SUMS.sig") {
        // A signature by the right key that does not verify, many times over.
        const bad = sigs.get(m[1]!)!.slice();
        bad[bad.length - 5]! ^= 0xff;
        const copies = m[1] === "sigbomb" ? 10_000 : m[1] === "sigmany" ? 300 : 1;
        const out = new Uint8Array(bad.length * copies);
        for (let i = 0; i < copies; i++) out.set(bad, i * bad.length);
        return new Response(out);
      }
      if (m[1] === "endless" && m[2] === ".zip") {
        // Signed and listed, then a body that never ends.
        const chunk = new Uint8Array(64 * 1024);
        return new Response(
          new ReadableStream({
            pull: (c) => c.enqueue(chunk.slice()),
          }, { highWaterMark: 0 }),
        );
      }
      const b = m[2] === ".zip"
        ? zipBody
        : m[2] === "_SHA256SUMS"
        ? sums.get(m[1]!)!
        : sigs.get(m[1]!)!;
      return new Response(b.slice());
    }
    // A redirect chain on the registry's own origin ending on another port.
    m = /^\/redir\/(\d+)(?:\/(.*))?$/.exec(path);
    if (m) {
      const n = Number(m[1]);
      const to = n > 0
        ? `${upUrl}/redir/${n - 1}${m[2] ? `/${m[2]}` : ""}`
        : m[2] ?? `http://localhost:${port}/end`;
      return new Response(null, { status: 302, headers: { location: to } });
    }
    return Response.json({ errors: ["Not Found"] }, { status: 404 });
  });
  upUrl = up.url;
  await using p = await serve(dir.path, { [H]: { url: up.url } }, {
    limits: { archiveSize: "1MiB" },
  });
  const zipOf = (v: string) => `/${H}/ssrf/${v}/terraform-provider-${v}_1.0.0_linux_amd64.zip`;
  const hostile = [
    ...Object.keys(targets),
    ...["redir", "redirfile", "redirv6", "sums", "sig", "sumsredir"],
  ];
  const got: Record<string, number> = {};
  await Promise.all(hostile.map(async (v) => {
    got[`mirror ${v}`] = await statusOf(p.base + zipOf(v));
    // The registry protocol: the document is rewritten to Repoxy's own
    // links; following them must fail the same way.
    const dl = await fetch(`${p.base}/v1/providers/${H}/ssrf/${v}/1.0.0/download/linux/amd64`);
    assertEquals(dl.status, 200, v);
    const doc = await dl.json();
    const zip = await statusOf(new URL(doc.download_url, p.url).href);
    got[`registry ${v}`] = zip;
  }));
  assertEquals(got, Object.fromEntries(Object.keys(got).map((k) => [k, 502])));
  assertEquals(internal.hits, [], "nothing internal was contacted");
  assertEquals(internal6?.hits ?? [], [], "nothing internal was contacted over IPv6");
  // SHA256SUMS.sig of 10,000 (1.9 MB) or 300 (56 KB) bad signatures, or one bad signature
  // and the signer's key offered 5,000 times: a few checks, a short 502.
  for (const v of ["sigbomb", "sigmany", "dupkeys"]) {
    const res = await fetch(p.base + zipOf(v));
    const body = await res.text();
    assertEquals(res.status, 502, v);
    assert(body.length < 4096, `${v}: a ${body.length}-byte error`);
  }
  assert(
    p.stderr.concat(p.stdout).every((l) => l.length < 8192),
    "no log line carries thousands of failures",
  );
  // An endless archive: the client sees a failed transfer, the server logs
  // a warning (no ERROR stack trace a hostile upstream could repeat at
  // will), keeps no temp file and stores nothing.
  const cut = await fetch(p.base + zipOf("endless"));
  assertEquals(cut.status, 200);
  const got2 = await cut.arrayBuffer().then((b) => b.byteLength, () => -1);
  assert(got2 <= 1024 * 1024, `received ${got2}`); // -1: the transfer failed
  const cache = join(dir.path, "cache");
  const tmpFiles = [];
  for await (const e of Deno.readDir(join(cache, "tmp"))) {
    if (e.isDirectory) {
      for await (const f of Deno.readDir(join(cache, "tmp", e.name))) tmpFiles.push(f.name);
    }
  }
  assertEquals(tmpFiles, []);
  // The same registry with everything on its own origin works: the attacks
  // above failed for the egress policy, not for a broken fixture.
  const ok = await fetch(p.base + zipOf("control"));
  assertEquals(ok.status, 200);
  assertEquals(sha256Hex(new Uint8Array(await ok.arrayBuffer())), sha);
  assertEquals((await p.stop("SIGTERM")).code, 0);
  const logged = p.stderr.concat(p.stdout);
  assert(!logged.some((l) => /unhandled server error/.test(l)), logged.join("\n"));
  assert(logged.some((l) => /response body cut.*archive size limit/.test(l)), "the cut is logged");
});

/** A zip of `n` empty stored entries (names e0, e1, …), built directly. */
function manyEntriesZip(n: number): { zip: Uint8Array; centralBytes: number } {
  const enc = new TextEncoder();
  const locals: Uint8Array[] = [];
  const centrals: Uint8Array[] = [];
  let offset = 0;
  for (let i = 0; i < n; i++) {
    const name = enc.encode(`e${i}`);
    const local = new Uint8Array(30 + name.length);
    const lv = new DataView(local.buffer);
    lv.setUint32(0, 0x04034b50, true);
    lv.setUint16(4, 20, true);
    lv.setUint16(26, name.length, true);
    local.set(name, 30);
    const central = new Uint8Array(46 + name.length);
    const cv = new DataView(central.buffer);
    cv.setUint32(0, 0x02014b50, true);
    cv.setUint16(4, 20, true);
    cv.setUint16(6, 20, true);
    cv.setUint16(28, name.length, true);
    cv.setUint32(42, offset, true);
    central.set(name, 46);
    locals.push(local);
    centrals.push(central);
    offset += local.length;
  }
  const centralBytes = centrals.reduce((a, c) => a + c.length, 0);
  const eocd = new Uint8Array(22);
  const ev = new DataView(eocd.buffer);
  ev.setUint32(0, 0x06054b50, true);
  ev.setUint16(8, n & 0xffff, true);
  ev.setUint16(10, n & 0xffff, true);
  ev.setUint32(12, centralBytes, true);
  ev.setUint32(16, offset, true);
  const zip = new Uint8Array(offset + centralBytes + 22);
  let at = 0;
  for (const part of [...locals, ...centrals, eocd]) {
    zip.set(part, at);
    at += part.length;
  }
  return { zip, centralBytes };
}

Deno.test("red team: h1: of an archive with a huge central directory stops reading at the entry bound", async () => {
  // 200,000 records here; a 2 GiB archive (limits.archiveSize) holds 45
  // million, gigabytes of heap if every record is collected before counting.
  const { zip, centralBytes } = manyEntriesZip(200_000);
  let pos = 0;
  let read = 0;
  const file: ZipFile = {
    read(buf) {
      if (pos >= zip.length) return Promise.resolve(null);
      const n = Math.min(buf.length, zip.length - pos);
      buf.set(zip.subarray(pos, pos + n));
      pos += n;
      read += n;
      return Promise.resolve(n);
    },
    seek(offset) {
      pos = offset;
      return Promise.resolve(pos);
    },
    stat: () => Promise.resolve({ size: zip.length }),
  };
  const err = await hashZipH1(file).then(() => undefined, (e) => e);
  assert(err instanceof ZipFormatError, String(err));
  assertMatch(err.message, /entries \(bound 10000\); refusing a zip bomb/);
  // 10,001 records are ~520 KB of a ~10 MB directory (plus one read-ahead chunk).
  assert(read < centralBytes / 4, `read ${read} of a ${centralBytes}-byte central directory`);
});

Deno.test("red team: a signing key offered with hundreds of user IDs is refused before its self-signatures are checked", async () => {
  // 2,000 user IDs cost 1.3 s of CPU per SHA256SUMS; a download document of
  // limits.metadataDocument (8 MiB) holds ~26,000.
  const { privateKey, publicKey } = await openpgp.generateKey({
    type: "ecc",
    curve: "ed25519Legacy",
    userIDs: Array.from({ length: 300 }, (_, i) => ({ name: `u${i}`, email: `u${i}@x.invalid` })),
    format: "armored",
  });
  const data = new TextEncoder().encode(`${"a".repeat(64)}  x.zip\n`);
  const signature = await signDetached(privateKey, data);
  const err = await verifyDetachedSignature({ data, signature, armoredKeys: [publicKey] }).then(
    () => undefined,
    (e) => e,
  );
  assert(err instanceof SignatureError, String(err));
  assertMatch(err.message, /carry 602 self-signatures; at most 128/);
});
