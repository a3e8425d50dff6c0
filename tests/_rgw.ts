/**
 * The RGW cluster of a test run, resolved once per process at import (see
 * tests/_rgw_cluster.ts for how it is started): from tests/run.ts through
 * {@link RGW_ENV}, or started here for a test file run alone. When it cannot
 * start, {@link rgw} is undefined and {@link rgwSkipReason} says why.
 * @module
 */
import { join } from "../lib/deps/path.ts";
import { cannotStart, newBucket, RGW_ENV, type RgwEndpoint, startRgw } from "./_rgw_cluster.ts";
import { type FakeArchive, type FakeRegistry, startFakeRegistry } from "./fake_registry.ts";
import { bytesOf, makeTestApp, sha256Hex, tempDir } from "./_helpers.ts";

export * from "./_rgw_cluster.ts";

function say(line: string): void {
  // deno-lint-ignore no-console
  console.log(line);
}

async function fromRunner(file: string): Promise<RgwEndpoint | string> {
  // tests/run.ts starts the cluster while `deno test` type-checks; wait for it.
  const until = Date.now() + 120_000;
  while (Date.now() < until) {
    const text = await Deno.readTextFile(file).catch(() => "");
    if (text.trim()) {
      const doc = JSON.parse(text) as { ready?: RgwEndpoint; unavailable?: string };
      return doc.ready ?? doc.unavailable ?? "tests/run.ts wrote no RGW state";
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  return "tests/run.ts did not report the RGW cluster within 120 s";
}

async function resolveRgw(): Promise<RgwEndpoint | string> {
  const file = Deno.env.get(RGW_ENV);
  if (file) return await fromRunner(file);
  const why = await cannotStart();
  if (why) return why;
  try {
    const running = await startRgw();
    globalThis.addEventListener("unload", () => {
      // Synchronous on purpose: nothing async runs in `unload`. The watchdog
      // (see startRgw) also removes the folder and KILLs what is left.
      const d = running.conf.replace(/\/ceph\.conf$/, "/run");
      try {
        for (const e of Deno.readDirSync(d)) {
          if (e.name.endsWith(".pid")) {
            Deno.kill(Number(Deno.readTextFileSync(join(d, e.name)).trim()), "SIGTERM");
          }
        }
      } catch { /* already stopped */ }
    });
    return running;
  } catch (e) {
    return `the RGW cluster did not start: ${(e as Error).message.split("\n")[0]}`;
  }
}

const resolved = await resolveRgw();

/** The test cluster, or undefined when it could not start ({@link rgwSkipReason}). */
export const rgw: RgwEndpoint | undefined = typeof resolved === "string" ? undefined : resolved;
/** Why the RGW tests do not run here, or undefined when they do. */
export const rgwSkipReason: string | undefined = typeof resolved === "string"
  ? resolved
  : undefined;

/**
 * Prints the file's one `SKIP:` line when RGW is unavailable; returns whether
 * the tests must be registered with `ignore: true`.
 */
export function skipUnlessRgw(what: string): boolean {
  if (rgwSkipReason) say(`SKIP: ${what}: ${rgwSkipReason}`);
  return rgwSkipReason !== undefined;
}

/**
 * A config fragment (`{ storage: … }`) putting Repoxy on `bucket` of the
 * test cluster under prefix `m`; `over` replaces keys of the section.
 */
export function storageConfig(
  bucket: string,
  over: Record<string, unknown> = {},
): { storage: Record<string, unknown> } {
  return {
    storage: {
      kind: "s3",
      endpoint: rgw!.endpoint,
      bucket,
      prefix: "m",
      credentials: { accessKeyId: rgw!.accessKeyId, secretAccessKey: rgw!.secretAccessKey },
      ...over,
    },
  };
}

/** `n` random bytes (`crypto.getRandomValues` fills at most 64 KiB a call). */
export function randomBytes(n: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i += 65536) crypto.getRandomValues(out.subarray(i, i + 65536));
  return out;
}

/** What {@link bucketWithOneArchive} set up; disposing it stops the fake registry. */
export interface OneArchiveBucket extends AsyncDisposable {
  /** The fake upstream serving the one archive. */
  fake: FakeRegistry;
  /** The fresh bucket, holding the archive under prefix `m`. */
  bucket: string;
  /** `example/alpha 1.0.0 linux_amd64`. */
  linux: FakeArchive;
  /** The storage config fragment the first replica used ({@link storageConfig}). */
  config: { storage: Record<string, unknown> };
}

/**
 * A fresh bucket already holding one archive: a fake registry serving
 * `example/alpha 1.0.0 linux_amd64` as `zip`, and a first replica (own temp
 * dir, closed again) that fetched it once, served it whole and stored it.
 * `over` replaces keys of the storage section.
 */
export async function bucketWithOneArchive(
  zip: Uint8Array,
  over: Record<string, unknown> = {},
): Promise<OneArchiveBucket> {
  const fake = await startFakeRegistry({
    providers: [{
      namespace: "example",
      type: "alpha",
      versions: [{ version: "1.0.0", platforms: ["linux_amd64"] }],
    }],
    zipOverride: () => zip,
  });
  try {
    const bucket = await newBucket(rgw!);
    const linux = fake.archive("alpha", "1.0.0", "linux_amd64");
    const config = storageConfig(bucket, over);
    await using dir = await tempDir();
    {
      await using first = await makeTestApp(fake, dir.path, config);
      const url = `/registry.terraform.io/example/alpha/${linux.filename}`;
      const got = sha256Hex(await bytesOf(await first.get(url)));
      if (got !== linux.sha256) throw new Error(`the first replica served ${got}`);
      await first.app.settle();
    }
    return {
      fake,
      bucket,
      linux,
      config,
      [Symbol.asyncDispose]: () => fake[Symbol.asyncDispose](),
    };
  } catch (e) {
    await fake[Symbol.asyncDispose]();
    throw e;
  }
}
