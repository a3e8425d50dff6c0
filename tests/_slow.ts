/**
 * Slow and broken bodies for fault-injection tests.
 * @module
 */
import { type FakeRegistry, startFakeRegistry } from "./fake_registry.ts";
import { TWO_PROVIDERS } from "./_helpers.ts";
import { makeZip } from "./_zip.ts";

/** A body that sends `bytes` in chunks with a pause before each. */
export function slowBody(
  bytes: Uint8Array,
  chunk: number,
  delayMs: number,
): ReadableStream<Uint8Array> {
  let at = 0;
  return new ReadableStream<Uint8Array>({
    async pull(c) {
      if (at >= bytes.length) {
        c.close();
        return;
      }
      await new Promise((r) => setTimeout(r, delayMs));
      c.enqueue(bytes.slice(at, at + chunk));
      at += chunk;
    },
  }, { highWaterMark: 0 });
}

/** A body that sends the first `cut` bytes, then breaks the connection. */
export function brokenBody(bytes: Uint8Array, cut: number): ReadableStream<Uint8Array> {
  let sent = false;
  return new ReadableStream<Uint8Array>({
    pull(c) {
      if (!sent) {
        sent = true;
        c.enqueue(bytes.slice(0, cut));
        return;
      }
      c.error(new Error("connection reset by test"));
    },
  });
}

/** A gate that holds handlers until the test opens it (so hanging servers can be shut down). */
export function gate(): { wait: Promise<void>; open: () => void } {
  let open!: () => void;
  const wait = new Promise<void>((r) => open = r);
  return { wait, open };
}

/** Random bytes (crypto.getRandomValues is limited to 64 KiB per call). */
export function randomBytes(n: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i += 65536) {
    crypto.getRandomValues(out.subarray(i, Math.min(n, i + 65536)));
  }
  return out;
}

/** The archive {@link slowArchiveFake} makes slow. */
export const SLOW_ZIP = "terraform-provider-alpha_1.0.0_linux_amd64.zip";

/**
 * A fake registry whose alpha 1.0.0 linux_amd64 archive is `size` random bytes
 * and trickles out in `chunk`-byte steps every `delayMs` while `slow.on`.
 */
export async function slowArchiveFake(
  opts: { size: number; chunk: number; delayMs: number; slow?: { on: boolean } },
): Promise<FakeRegistry> {
  const big = await makeZip([{
    name: "terraform-provider-alpha_v1.0.0",
    data: randomBytes(opts.size),
    mode: 0o755,
  }]);
  // The intercept closure reads `fake` only after it is assigned.
  const fake: FakeRegistry = await startFakeRegistry({
    providers: TWO_PROVIDERS,
    zipOverride: (name, zip) => name === SLOW_ZIP ? big : zip,
    intercept: (req) => {
      if (
        (opts.slow?.on ?? true) &&
        new URL(req.url).pathname === `/files/example/alpha/1.0.0/${SLOW_ZIP}`
      ) {
        const a = fake.archive("alpha", "1.0.0", "linux_amd64");
        return new Response(slowBody(a.bytes, opts.chunk, opts.delayMs), {
          headers: { "content-length": String(a.bytes.length) },
        });
      }
    },
  });
  return fake;
}
