/**
 * Repoxy as a real process: kill -9 mid-download then restart, and a
 * graceful SIGTERM that lets an in-flight download finish.
 */
import { assert, assertEquals } from "../lib/deps/assert.ts";
import { join } from "../lib/deps/path.ts";
import type { FakeRegistry } from "./fake_registry.ts";
import { listDir, sha256Hex, tempDir, tempLeftovers } from "./_helpers.ts";
import { slowArchiveFake } from "./_slow.ts";

const H = "registry.terraform.io";
const ZIP = `/${H}/example/alpha/terraform-provider-alpha_1.0.0_linux_amd64.zip`;
const MAIN = new URL("../main.ts", import.meta.url).pathname;

/** A fake whose alpha archive (~2 MiB) trickles out while `slow.on`. */
function slowFake(slow: { on: boolean }): Promise<FakeRegistry> {
  return slowArchiveFake({ size: 2 << 20, chunk: 32 * 1024, delayMs: 20, slow });
}

/** A slow fake, a cache dir and a config file pointing at the fake. */
async function setup(slow: { on: boolean }) {
  const fake = await slowFake(slow);
  const dir = await tempDir();
  const cacheDir = join(dir.path, "cache");
  const configPath = join(dir.path, "repoxy.json");
  await Deno.writeTextFile(
    configPath,
    JSON.stringify({
      cacheDir,
      upstreams: { [H]: { url: fake.registryUrl } },
      egressAllow: fake.egressAllow,
    }),
  );
  return {
    fake,
    cacheDir,
    configPath,
    want: fake.archive("alpha", "1.0.0", "linux_amd64"),
    async [Symbol.asyncDispose]() {
      await fake.stop();
      await dir[Symbol.asyncDispose]();
    },
  };
}

interface Proc {
  child: Deno.ChildProcess;
  url: string;
  stderr: () => string;
}

/** Starts `main.ts serve` and waits for its banner to learn the port. */
async function startRepoxy(configPath: string): Promise<Proc> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-P=serve", MAIN, "serve", "--config", configPath, "--listen", "127.0.0.1:0"],
    stdout: "null",
    stderr: "piped",
    stdin: "null",
  }).spawn();
  let text = "";
  const dec = new TextDecoder();
  const reader = child.stderr.getReader();
  let url = "";
  const deadline = Date.now() + 30_000;
  while (!url) {
    if (Date.now() > deadline) throw new Error(`repoxy did not start:\n${text}`);
    const { value, done } = await reader.read();
    if (done) throw new Error(`repoxy exited:\n${text}`);
    text += dec.decode(value);
    url = /is serving at (http\S+\/)/.exec(text)?.[1] ?? "";
  }
  // Keep draining stderr so the child never blocks on a full pipe.
  (async () => {
    while (true) {
      const { value, done } = await reader.read();
      if (done) break;
      text += dec.decode(value);
    }
  })();
  return { child, url, stderr: () => text };
}

Deno.test("kill -9 during a download leaves nothing partial; restart cleans tmp and fetches again", async () => {
  const slow = { on: true };
  await using s = await setup(slow);
  const { cacheDir, configPath, want } = s;

  const first = await startRepoxy(configPath);
  const res = await fetch(first.url + ZIP.slice(1));
  const reader = res.body!.getReader();
  let got = 0;
  while (got < 128 * 1024) {
    const { value, done } = await reader.read();
    if (done) break;
    got += value.length;
  }
  assert(got > 0 && got < want.bytes.length);
  first.child.kill("SIGKILL");
  const status = await first.child.status;
  assertEquals(status.signal, "SIGKILL");
  await reader.cancel().catch(() => {});

  // Nothing half-written is visible; the partial file is only in tmp/.
  assertEquals(await listDir(join(cacheDir, "packages", H, "example", "alpha")), []);
  const leftovers = await tempLeftovers(cacheDir);
  assert(leftovers.length >= 1, "the killed download left a temp file behind (in tmp/ only)");
  for (const f of await listDir(join(cacheDir, "refs", H, "example", "alpha", "1.0.0"))) {
    assert(!f.includes(".tmp-"), f);
  }

  slow.on = false;
  const second = await startRepoxy(configPath);
  try {
    assertEquals(await tempLeftovers(cacheDir), [], "tmp/ is emptied at start-up");
    const again = await fetch(second.url + ZIP.slice(1));
    assertEquals(again.status, 200);
    const bytes = new Uint8Array(await again.arrayBuffer());
    assertEquals(sha256Hex(bytes), want.sha256);
    // Wait for the rename into packages/.
    const stored = join(cacheDir, "packages", H, "example", "alpha", want.filename);
    for (
      let i = 0;
      i < 50 && (await listDir(join(cacheDir, "packages", H, "example", "alpha"))).length === 0;
      i++
    ) {
      await new Promise((r) => setTimeout(r, 100));
    }
    assertEquals(sha256Hex(await Deno.readFile(stored)), want.sha256);
  } finally {
    second.child.kill("SIGTERM");
    await second.child.status;
  }
});

Deno.test("SIGTERM: in-flight downloads finish, new connections are refused, exit 0, tmp empty", async () => {
  const slow = { on: true };
  await using s = await setup(slow);
  const { cacheDir, configPath, want } = s;

  const p = await startRepoxy(configPath);
  const client = Deno.createHttpClient({ poolMaxIdlePerHost: 0 });
  try {
    const res = await fetch(p.url + ZIP.slice(1), { client });
    const body = res.arrayBuffer();
    await new Promise((r) => setTimeout(r, 200));
    p.child.kill("SIGTERM");
    await new Promise((r) => setTimeout(r, 300));
    let refused = false;
    try {
      const r2 = await fetch(p.url + "-/healthz", { client });
      await r2.body?.cancel();
    } catch {
      refused = true;
    }
    assert(refused, "no new connections after SIGTERM");
    const bytes = new Uint8Array(await body);
    assertEquals(sha256Hex(bytes), want.sha256, "the in-flight download completed");
    const status = await p.child.status;
    assertEquals(status.code, 0, p.stderr());
    assertEquals(await tempLeftovers(cacheDir), []);
    assert(p.stderr().includes("shutdown complete"), p.stderr());
  } finally {
    client.close();
    try {
      p.child.kill("SIGKILL");
    } catch { /* already exited */ }
  }
});
