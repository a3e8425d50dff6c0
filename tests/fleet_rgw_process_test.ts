/**
 * A fleet of real Repoxy processes (`deno run main.ts serve`) on one Ceph
 * RGW bucket (`storage.kind: "s3"`), each with its own local tier, and one
 * fake upstream: 8 concurrent cold clients spread over three replicas cause
 * exactly one upstream fetch; `kill -9` of the lease holder mid-download
 * leaves its lease to go stale by RGW's clock, another replica completes the
 * fetch, no partial archive is ever listed in the bucket, and a client
 * retrying on another replica succeeds.
 * @module
 */
import { assertEquals } from "../lib/deps/assert.ts";
import { join } from "../lib/deps/path.ts";
import { writeFakeConfig } from "./_cli.ts";
import { type RepoxyProcess, spawnRepoxy } from "./_process.ts";
import { listBucket, newBucket, rgw, skipUnlessRgw } from "./_rgw.ts";
import { type FakeRegistry, startFakeRegistry } from "./fake_registry.ts";
import { sha256Hex, tempDir, TWO_PROVIDERS } from "./_helpers.ts";

const ignore = skipUnlessRgw("a fleet of replica processes on RGW");
const MAIN = new URL("../main.ts", import.meta.url).pathname;
const H = "registry.terraform.io";
const PREFIX = "fleet";

async function replica(
  dir: string,
  name: string,
  fake: FakeRegistry,
  bucket: string,
): Promise<RepoxyProcess> {
  const home = join(dir, name);
  await Deno.mkdir(home, { recursive: true });
  const { config } = await writeFakeConfig(home, fake, {
    storage: {
      kind: "s3",
      endpoint: rgw!.endpoint,
      bucket,
      prefix: PREFIX,
      credentials: { accessKeyId: rgw!.accessKeyId, secretAccessKey: rgw!.secretAccessKey },
      // The shortest TTL: a dead holder is taken over within seconds.
      leaseTtl: "3s",
      leaseWait: "60s",
    },
  });
  return await spawnRepoxy(Deno.execPath(), [
    "run",
    "-P=serve",
    MAIN,
    "serve",
    "--config",
    config,
    "--listen",
    "127.0.0.1:0",
  ], { timeoutMs: 60_000 });
}

/** `repoxy_downloads_in_flight` of a replica. */
async function inFlight(r: RepoxyProcess): Promise<number> {
  const text = await (await fetch(r.url + "-/metrics")).text();
  const line = text.split("\n").find((l) => l.startsWith("repoxy_downloads_in_flight "));
  return Number(line?.split(" ")[1] ?? NaN);
}

async function until(cond: () => Promise<boolean> | boolean, what: string, ms = 20_000) {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

async function result(p: Promise<Response>): Promise<{ status: number; sha: string }> {
  const res = await p;
  return { status: res.status, sha: sha256Hex(new Uint8Array(await res.arrayBuffer())) };
}

Deno.test({
  name:
    "replica processes on RGW: 8 concurrent cold clients → 1 upstream fetch; kill -9 of the holder → another replica completes, nothing partial in the bucket",
  ignore,
  async fn(t) {
    let releaseFirst!: () => void;
    const firstHeld = new Promise<void>((r) => releaseFirst = r);
    let openAll!: () => void;
    const allIn = new Promise<void>((r) => openAll = r);
    const dying = "terraform-provider-beta_2.3.4_linux_arm64.zip";
    let dyingGets = 0;
    await using fake = await startFakeRegistry({
      providers: TWO_PROVIDERS,
      redirectDownloads: false,
      intercept: async (req, server) => {
        const path = new URL(req.url).pathname;
        if (server !== "release" || !path.endsWith(".zip")) return undefined;
        if (!path.endsWith(dying)) {
          await allIn;
          return undefined;
        }
        if (dyingGets++ > 0) return undefined;
        // The holder gets half the archive, then the upstream stalls (until the end).
        const bytes = fake.archive("beta", "2.3.4", "linux_arm64").bytes;
        const half = bytes.slice(0, bytes.length >> 1);
        let sent = false;
        return new Response(
          new ReadableStream<Uint8Array>({
            async pull(c) {
              if (!sent) {
                sent = true;
                c.enqueue(half);
                return;
              }
              await firstHeld;
              c.close();
            },
          }),
          { headers: { "content-length": String(bytes.length) } },
        );
      },
    });
    await using dir = await tempDir();
    const bucket = await newBucket(rgw!);
    const replicas = await Promise.all(
      ["a", "b", "c"].map((n) => replica(dir.path, n, fake, bucket)),
    );
    const zipGets = (name?: string) =>
      fake.count((r) => r.server === "release" && r.path.endsWith(name ?? ".zip"));
    try {
      await t.step(
        "8 concurrent cold clients over three replicas: one upstream fetch",
        async () => {
          const a = fake.archive("alpha", "1.0.0", "linux_amd64");
          const url = `${H}/example/alpha/${a.filename}`;
          const clients = Array.from(
            { length: 8 },
            (_, i) => result(fetch(replicas[i % 3]!.url + url)),
          );
          // Each replica has its download going: one holds the lease, two wait.
          await until(
            async () => (await Promise.all(replicas.map(inFlight))).every((n) => n === 1),
            "a download on every replica",
          );
          openAll();
          for (const c of clients) assertEquals(await c, { status: 200, sha: sha256Hex(a.bytes) });
          assertEquals(zipGets(a.filename), 1, "one upstream fetch across the fleet");
          const stored = await listBucket(rgw!, bucket, `${PREFIX}/packages/`);
          assertEquals(stored.map((o) => o.size), [a.bytes.length]);
          await until(
            async () => (await listBucket(rgw!, bucket, `${PREFIX}/leases/`)).length === 0,
            "the lease to be deleted",
          );
        },
      );

      await t.step(
        "kill -9 of the lease holder mid-download: another replica completes it",
        async () => {
          const b = fake.archive("beta", "2.3.4", "linux_arm64");
          const url = `${H}/example/beta/${b.filename}`;
          const key = `${PREFIX}/packages/${H}/example/beta/${b.filename}`;
          // Watches the bucket throughout: an archive there is only ever whole.
          const seen = new Set<number>();
          let watching = true;
          const watcher = (async () => {
            while (watching) {
              for (const o of await listBucket(rgw!, bucket, key)) seen.add(o.size);
              await new Promise((r) => setTimeout(r, 30));
            }
          })();
          const holder = replicas[0]!;
          const holderRes = await fetch(holder.url + url);
          assertEquals(holderRes.status, 200);
          const holderBody = holderRes.arrayBuffer().catch(() => "cut off");
          await until(() => zipGets(b.filename) === 1, "the holder's upstream request");
          const waiting = [1, 2, 1, 2].map((i) => result(fetch(replicas[i]!.url + url)));
          await until(
            async () =>
              (await inFlight(replicas[1]!)) === 1 && (await inFlight(replicas[2]!)) === 1,
            "both other replicas waiting",
          );
          assertEquals(await listBucket(rgw!, bucket, key), [], "nothing in the bucket yet");
          await holder.stop("SIGKILL");
          assertEquals(await holderBody, "cut off", "the dead holder's client was cut off");
          for (const w of waiting) assertEquals(await w, { status: 200, sha: sha256Hex(b.bytes) });
          assertEquals(zipGets(b.filename), 2, "the dead holder's fetch and exactly one taker's");
          // The dead holder's client retries on another replica.
          assertEquals(await result(fetch(replicas[1]!.url + url)), {
            status: 200,
            sha: sha256Hex(b.bytes),
          });
          watching = false;
          await watcher;
          assertEquals([...seen], [b.bytes.length], "only the whole archive was ever listed");
          const taker = [replicas[1]!, replicas[2]!].map((r) =>
            r.stdout.concat(r.stderr).some((l) =>
              l.includes("took over an abandoned archive lease")
            )
          );
          assertEquals(taker.filter(Boolean).length, 1, "exactly one replica took over");
        },
      );
    } finally {
      openAll();
      releaseFirst();
      for (const r of replicas) await r.stop("SIGTERM").catch(() => {});
    }
  },
});
