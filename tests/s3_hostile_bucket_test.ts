/**
 * A hostile or faulty bucket, answered by a fake S3 behind the client's
 * injected `fetch` (faults a real RGW does not produce): a body that stalls
 * mid-stream, a lease body without end, dates that are not dates; and the
 * credential chain's web identity exchange keeping its token out of URLs and
 * messages. Each would hang, grow without bound or leak before its fix.
 * @module
 */
import { assert, assertEquals } from "../lib/deps/assert.ts";
import { S3Client, S3Error } from "../lib/storage_s3/s3_client.ts";
import { S3Storage } from "../lib/storage_s3/s3_storage.ts";
import { headOf, S3Object } from "../lib/storage_s3/s3_object.ts";
import { awsCredentialChain } from "../lib/storage_s3/credentials.ts";
import { FillingObject, type TieredStorage } from "../lib/storage_s3/tiered_storage.ts";
import { sha256Hex, tempDir } from "./_helpers.ts";

const TIMEOUT_MS = 150;

/** A client whose every request is answered by `answer`. */
function clientOf(answer: (req: Request) => Response): S3Client {
  return new S3Client({
    endpoint: "http://s3.test:7480",
    bucket: "b",
    region: "us-east-1",
    pathStyle: true,
    credentials: () => Promise.resolve({ accessKeyId: "AKIDTEST", secretAccessKey: "s3cr3t" }),
    timeoutMs: TIMEOUT_MS,
    fetch: (input, init) => Promise.resolve(answer(new Request(input, init))),
  });
}

function storageOf(client: S3Client): S3Storage {
  return new S3Storage(client, {
    prefix: "m",
    tempPath: () => "/nonexistent",
    multipartThresholdBytes: 1 << 30,
    partSizeBytes: 1 << 24,
  });
}

/** A body that sends `first` and then nothing, ever (until cancelled). */
function stalling(
  first: Uint8Array,
): { body: ReadableStream<Uint8Array>; cancelled: () => boolean } {
  let cancelled = false;
  let sent = false;
  const body = new ReadableStream<Uint8Array>({
    pull(c) {
      if (!sent) {
        sent = true;
        c.enqueue(first);
      }
      return new Promise<void>(() => {}); // never more
    },
    cancel() {
      cancelled = true;
    },
  }, { highWaterMark: 0 });
  return { body, cancelled: () => cancelled };
}

/** The error `p` rejects with (fails when it resolves). */
async function rejection(p: Promise<unknown>): Promise<Error> {
  try {
    await p;
  } catch (e) {
    assert(e instanceof Error, String(e));
    return e;
  }
  throw new Error("expected a rejection");
}

/** Fails (instead of hanging the suite) when `p` does not settle within `ms`. */
async function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, rej) => timer = setTimeout(() => rej(new Error(`${what} hung`)), ms)),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

Deno.test("hostile bucket: an archive body stalled mid-stream fails the read after the timeout (the client's transfer is cut, not held)", async () => {
  const s = stalling(new Uint8Array(1000).fill(7));
  const client = clientOf(() =>
    new Response(s.body, { status: 206, headers: { "content-length": "10000" } })
  );
  const head = headOf(new Headers({ "content-length": "10000", etag: '"e1"' }));
  const o = new S3Object("packages/x.zip", head, client, "m/packages/x.zip");
  const buf = new Uint8Array(4096);
  assertEquals(await o.read(buf), 1000);
  const e = await within(rejection(o.read(buf)), 5_000, "the stalled read");
  assert(e instanceof S3Error, String(e));
  assert(e.message.includes("sent nothing"), e.message);
  // The cancel runs behind the rejection: give it a few turns.
  for (let i = 0; i < 50 && !s.cancelled(); i++) await new Promise((r) => setTimeout(r, 10));
  assert(s.cancelled(), "the stalled response is cancelled");
  o.close();
});

Deno.test("hostile bucket: a refs document stalled mid-stream fails the get instead of hanging", async () => {
  const s = stalling(new TextEncoder().encode('{"fetchedAt":'));
  const storage = storageOf(clientOf(() => new Response(s.body, { status: 200 })));
  const e = await within(rejection(storage.get("refs/x/versions")), 5_000, "get");
  assert(e instanceof S3Error, String(e));
  assert(s.cancelled());
});

Deno.test("hostile bucket: a lease body without end is read to a bound (64 KiB), not into memory", async () => {
  let pulled = 0;
  const endless = new ReadableStream<Uint8Array>({
    pull(c) {
      pulled += 65536;
      c.enqueue(new Uint8Array(65536).fill(0x20));
    },
  }, { highWaterMark: 0 });
  const store = storageOf(clientOf(() =>
    new Response(endless, {
      status: 200,
      headers: { etag: '"l1"', "last-modified": new Date().toUTCString() },
    })
  )).coordination();
  const got = await within(store.read("leases/h/ns/t/x.zip.lease"), 5_000, "the lease read");
  assert(got);
  assertEquals(got.body.length, 0, "an oversized lease reads as unreadable");
  assertEquals(got.etag, "l1");
  assert(pulled <= 4 * 65536, `${pulled} bytes pulled`);
});

Deno.test("hostile bucket: a lease with a Content-Length past the bound is not read at all", async () => {
  let pulled = 0;
  const body = new ReadableStream<Uint8Array>({
    pull(c) {
      pulled += 1;
      c.enqueue(new Uint8Array(1024));
    },
  }, { highWaterMark: 0 });
  const store = storageOf(
    clientOf(() =>
      new Response(body, { status: 200, headers: { "content-length": String(2 ** 30) } })
    ),
  ).coordination();
  const got = await store.read("leases/x.lease");
  assertEquals(got?.body.length, 0);
  assert(pulled <= 1, `${pulled} chunks pulled`);
});

Deno.test("hostile bucket: Date and Last-Modified that are not dates give usable times (a lease neither stale forever nor never)", async () => {
  const cases: [string | null, string | null][] = [
    ["garbage", "also garbage"],
    [null, "???"],
    ["Tue, 99 Foo", null],
  ];
  for (const [date, lm] of cases) {
    const headers = new Headers({ etag: '"l2"' });
    if (date !== null) headers.set("date", date);
    if (lm !== null) headers.set("last-modified", lm);
    const store = storageOf(clientOf(() => new Response('{"v":1}', { status: 200, headers })))
      .coordination();
    const got = (await store.read("leases/x.lease"))!;
    const age = got.serverNow.getTime() - got.lastModified.getTime();
    assert(Number.isFinite(age), `date ${date}, last-modified ${lm}: age ${age}`);
    assertEquals(age, 0, "unreadable times count as just written: garbage never forces a takeover");
  }
});

Deno.test("hostile bucket: the web identity exchange sends its token in a POST body, never in the URL, and no error repeats it", async () => {
  const TOKEN = "eyJhbGciOiJSUzI1NiJ9.secret-web-identity-token";
  const seen: { url: string; method: string; body: string }[] = [];
  const env = (fail: boolean) => ({
    getEnv: (n: string) =>
      ({
        AWS_WEB_IDENTITY_TOKEN_FILE: "/token",
        AWS_ROLE_ARN: "arn:aws:iam::1:role/r",
        AWS_REGION: "eu-west-1",
        AWS_EC2_METADATA_DISABLED: "true",
      } as Record<string, string>)[n],
    readTextFile: () => Promise.resolve(TOKEN + "\n"),
    now: () => 0,
    fetch: async (input: string | URL | Request, init?: RequestInit) => {
      const req = new Request(input, init);
      seen.push({ url: req.url, method: req.method, body: await req.text() });
      if (fail) throw new TypeError(`error sending request for url (${req.url}) body ${TOKEN}`);
      return new Response(
        "<AssumeRoleWithWebIdentityResponse><Credentials><AccessKeyId>ASIA1</AccessKeyId>" +
          "<SecretAccessKey>k</SecretAccessKey><SessionToken>t</SessionToken>" +
          "<Expiration>2099-01-01T00:00:00Z</Expiration></Credentials></AssumeRoleWithWebIdentityResponse>",
      );
    },
  });
  const c = await awsCredentialChain(env(false))();
  assertEquals(c.accessKeyId, "ASIA1");
  assertEquals(seen[0]!.method, "POST");
  assert(!seen[0]!.url.includes(TOKEN), seen[0]!.url);
  assertEquals(new URLSearchParams(seen[0]!.body).get("WebIdentityToken"), TOKEN);

  const e = await rejection(awsCredentialChain(env(true))());
  assert(!e.message.includes(TOKEN), e.message);
  assert(e.message.includes("web identity"), e.message);
});

Deno.test("hostile bucket: the start-up sweep walks every page of abandoned multipart uploads (2500 in three pages), and stops on a listing that does not move on", async () => {
  const TOTAL = 2500;
  const old = new Date(Date.now() - 86_400_000).toISOString();
  const aborted = new Set<string>();
  let listings = 0;
  const page = (from: number, stuck: boolean) => {
    const to = Math.min(TOTAL, from + 1000);
    const uploads = [];
    for (let i = from; i < to; i++) {
      uploads.push(
        `<Upload><Key>m/packages/k${
          String(i).padStart(5, "0")
        }.zip</Key><UploadId>u${i}</UploadId><Initiated>${old}</Initiated></Upload>`,
      );
    }
    const more = stuck || to < TOTAL;
    const last = String(to - 1).padStart(5, "0");
    return `<ListMultipartUploadsResult><IsTruncated>${more}</IsTruncated>` +
      (more
        ? `<NextKeyMarker>m/packages/k${last}.zip</NextKeyMarker><NextUploadIdMarker>u${
          to - 1
        }</NextUploadIdMarker>`
        : "") +
      uploads.join("") + `</ListMultipartUploadsResult>`;
  };
  const answer = (stuck: boolean) => (req: Request) => {
    const u = new URL(req.url);
    if (req.method === "DELETE") {
      aborted.add(u.searchParams.get("uploadId")!);
      return new Response(null, { status: 204 });
    }
    listings++;
    if (stuck) return new Response(page(0, true));
    const marker = u.searchParams.get("key-marker");
    const from = marker ? Number(/k(\d+)\.zip/.exec(marker)![1]) + 1 : 0;
    return new Response(page(from, false));
  };
  assertEquals(await storageOf(clientOf(answer(false))).sweepUploads(60_000), TOTAL);
  assertEquals(aborted.size, TOTAL);
  assertEquals(listings, 3);

  listings = 0;
  aborted.clear();
  const n = await within(storageOf(clientOf(answer(true))).sweepUploads(60_000), 10_000, "sweep");
  assertEquals(listings, 2, "the same page twice ends the sweep");
  assertEquals(aborted.size, 1000);
  assert(n >= 1000);
});

Deno.test("hostile bucket: a store that answers a second GET of the same object with other bytes is caught on the pass the client reads (a good first pass vouches for nothing)", async () => {
  const good = new Uint8Array(100 * 1024);
  for (let i = 0; i < good.length; i += 65536) {
    crypto.getRandomValues(good.subarray(i, i + 65536));
  }
  const flipped = good.slice();
  flipped[10] = flipped[10]! ^ 1; // inside the first 64 KiB
  let gets = 0;
  const client = clientOf((req) => {
    const from = Number(/bytes=(\d+)-/.exec(req.headers.get("range") ?? "")?.[1] ?? "0");
    const body = (gets++ === 0 ? good : flipped).subarray(from);
    return new Response(body, { status: 206, headers: { "content-length": String(body.length) } });
  });
  const head = headOf(
    new Headers({
      "content-length": String(good.length),
      etag: '"e"',
      "x-amz-meta-sha256": sha256Hex(good),
    }),
  );
  const marked: string[] = [];
  const tier = {
    maxFillBytes: 0,
    claimFill: () => false,
    finishFill: () => {},
    markBad: (k: string) => marked.push(k),
    locate: (k: string) => k,
    bucket: { locate: (k: string) => k },
    log: { warn: () => {} },
  } as unknown as TieredStorage;
  const o = new FillingObject(
    new S3Object("packages/x.zip", head, client, "m/packages/x.zip"),
    tier,
  );
  o.expect(sha256Hex(good));
  const buf = new Uint8Array(good.length);
  // First pass (like the fingerprint of a small archive): whole and good.
  let n = 0;
  while (n < good.length) n += (await o.read(buf.subarray(n)))!;
  // The client's pass: a new GET, other bytes.
  await o.seek(0, Deno.SeekMode.Start);
  let served = 0;
  const e = await rejection((async () => {
    while (true) {
      const r = await o.read(buf.subarray(0, 8192));
      if (r === null) break;
      served += r;
    }
  })());
  assert(e instanceof S3Error, String(e));
  assert(served < good.length, `${served} bytes served`);
  assertEquals(marked, ["packages/x.zip"]);
  assertEquals(gets, 2);
  o.close();
});

/** A body of spaces that never ends, counting what was pulled from it. */
function endlessBody(): { body: ReadableStream<Uint8Array>; pulled: () => number } {
  let pulled = 0;
  const body = new ReadableStream<Uint8Array>({
    pull(c) {
      pulled += 65536;
      c.enqueue(new Uint8Array(65536).fill(0x20));
    },
  }, { highWaterMark: 0 });
  return { body, pulled: () => pulled };
}

Deno.test("hostile bucket: a listing (or any small answer) without end is read to a bound (8 MiB) and fails, not into memory", async () => {
  const endless = endlessBody();
  const s = storageOf(clientOf(() => new Response(endless.body, { status: 200 })));
  const listed = (async () => {
    for await (const _ of s.list("packages/")) { /* nothing arrives */ }
  })();
  const err = await within(listed.then(() => undefined, (e) => e), 5_000, "the listing");
  assert(err instanceof S3Error, String(err));
  assert(/more than 8388608 bytes/.test(err.message), err.message);
  assert(endless.pulled() <= 8 * 2 ** 20 + 2 * 65536, `${endless.pulled()} bytes pulled`);
});

Deno.test("hostile bucket: an upload answered with a body without end fails at the bound (8 MiB) instead of buffering it", async () => {
  await using dir = await tempDir();
  const file = `${dir.path}/f`;
  await Deno.writeFile(file, new TextEncoder().encode("archive"));
  let sent = 0;
  const ac = new AbortController();
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, signal: ac.signal, onListen() {} },
    async (req) => {
      await req.body?.cancel();
      const body = new ReadableStream<Uint8Array>({
        pull(c) {
          sent += 65536;
          if (sent > 64 * 2 ** 20) return c.close(); // the old code read it all
          c.enqueue(new Uint8Array(65536).fill(0x20));
        },
      }, { highWaterMark: 0 });
      return new Response(body, { status: 200 });
    },
  );
  try {
    const client = new S3Client({
      endpoint: `http://127.0.0.1:${server.addr.port}`,
      bucket: "b",
      region: "us-east-1",
      pathStyle: true,
      credentials: () => Promise.resolve({ accessKeyId: "AKIDTEST", secretAccessKey: "s3cr3t" }),
      timeoutMs: 5_000,
    });
    using f = await Deno.open(file);
    const put = client.putFile("k", f, 0, 7, sha256Hex(new TextEncoder().encode("archive")));
    const err = await within(put.then(() => undefined, (e) => e), 10_000, "the upload");
    assert(err instanceof S3Error, String(err));
    assert(/more than 8388608 bytes/.test(err.message), err.message);
  } finally {
    ac.abort();
    await server.finished;
  }
});

Deno.test("hostile bucket: a listing that never moves on (the same continuation token again) fails instead of looping, and keys outside the prefix are not listed", async () => {
  let pages = 0;
  const storage = storageOf(clientOf(() => {
    pages++;
    return new Response(
      `<ListBucketResult><IsTruncated>true</IsTruncated>` +
        `<NextContinuationToken>same</NextContinuationToken>` +
        `<Contents><Key>m/packages/a.zip</Key><Size>1</Size></Contents>` +
        `<Contents><Key>elsewhere/packages/b.zip</Key><Size>1</Size></Contents>` +
        `</ListBucketResult>`,
      { status: 200 },
    );
  }));
  const keys: string[] = [];
  const err = await within(
    rejection((async () => {
      for await (const o of storage.list("packages/")) keys.push(o.key);
    })()),
    5_000,
    "the listing",
  );
  assert(err instanceof S3Error, String(err));
  assert(/does not move on/.test(err.message), err.message);
  assertEquals(pages, 2);
  assertEquals(keys, ["packages/a.zip", "packages/a.zip"]);
});
