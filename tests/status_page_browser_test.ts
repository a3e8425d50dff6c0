/**
 * The status page in a real browser: headless Chromium renders it from a
 * running server, dumps the DOM and takes a screenshot. Chromium is installed
 * with apt-get when missing; when that is impossible the test prints one
 * `SKIP:` line and passes.
 */
import { assert, assertEquals } from "../lib/deps/assert.ts";
import { join } from "../lib/deps/path.ts";
import { serveApp } from "../lib/app.ts";
import { formatBytes } from "../lib/ops/status_page.ts";
import { startFakeRegistry } from "./fake_registry.ts";
import { bytesOf, makeTestApp, tempDir, TWO_PROVIDERS } from "./_helpers.ts";

const H = "registry.terraform.io";
const CANDIDATES = ["/usr/bin/chromium", "/usr/bin/chromium-browser"];

async function isExecutable(path: string): Promise<boolean> {
  try {
    const st = await Deno.stat(path);
    return st.isFile && ((st.mode ?? 0o111) & 0o111) !== 0;
  } catch {
    return false;
  }
}

async function findChromium(): Promise<string | undefined> {
  for (const c of CANDIDATES) if (await isExecutable(c)) return c;
  return undefined;
}

async function run(cmd: string, args: string[], timeoutMs: number) {
  try {
    return await new Deno.Command(cmd, {
      args,
      stdout: "piped",
      stderr: "piped",
      stdin: "null",
      env: { DEBIAN_FRONTEND: "noninteractive" },
      signal: AbortSignal.timeout(timeoutMs),
    }).output();
  } catch (e) {
    return {
      success: false,
      code: -1,
      stdout: new Uint8Array(),
      stderr: new TextEncoder().encode(String(e)),
    };
  }
}

/** Chromium's path, installing Debian's package when missing; or why it is unavailable. */
async function ensureChromium(): Promise<{ path: string } | { skip: string }> {
  const found = await findChromium();
  if (found) return { path: found };
  if (Deno.build.os !== "linux") return { skip: "Chromium is installed by apt-get on Linux only" };
  if (Deno.uid() !== 0) {
    return { skip: "chromium is missing and apt-get needs root (apt-get install -y chromium)" };
  }
  const update = await run("apt-get", ["update", "-qq"], 300_000);
  if (!update.success) {
    return {
      skip: `apt-get update failed: ${new TextDecoder().decode(update.stderr).trim().slice(-300)}`,
    };
  }
  const install = await run("apt-get", [
    "install",
    "-y",
    "-qq",
    "--no-install-recommends",
    "chromium",
  ], 600_000);
  const path = await findChromium();
  if (!install.success || !path) {
    return {
      skip: `apt-get install chromium failed: ${
        new TextDecoder().decode(install.stderr).trim().slice(-300)
      }`,
    };
  }
  return { path };
}

function chromiumArgs(profile: string, extra: string[], url: string): string[] {
  return [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    `--user-data-dir=${profile}`,
    ...extra,
    url,
  ];
}

/** Width and height from a PNG's IHDR chunk; throws when it is not a PNG. */
function pngSize(png: Uint8Array): { width: number; height: number } {
  const sig = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];
  if (!sig.every((b, i) => png[i] === b)) throw new Error("not a PNG");
  if (new TextDecoder().decode(png.subarray(12, 16)) !== "IHDR") throw new Error("no IHDR");
  const v = new DataView(png.buffer, png.byteOffset, png.byteLength);
  return { width: v.getUint32(16), height: v.getUint32(20) };
}

// Decided before registration, so a missing browser is reported as ignored,
// never as passed.
const chromium = await ensureChromium();
if ("skip" in chromium) {
  // deno-lint-ignore no-console
  console.log(`SKIP: status page browser test: ${chromium.skip}`);
}

Deno.test({
  name: "headless Chromium renders the status page: cached providers, versions, the snippet",
  ignore: "skip" in chromium,
}, async () => {
  if ("skip" in chromium) return;
  await using fake = await startFakeRegistry({ providers: TWO_PROVIDERS });
  await using dir = await tempDir();
  await using t = await makeTestApp(fake, join(dir.path, "cache"), { listen: "127.0.0.1:0" });
  const server = serveApp(t.app);
  try {
    const base = server.url;
    const a = fake.archive("alpha", "1.1.0", "linux_amd64");
    const b = fake.archive("beta", "2.3.4", "darwin_arm64");
    for (const f of [a, b, fake.archive("beta", "2.3.4", "linux_arm64")]) {
      const res = await fetch(`${base}${H}/example/${f.type}/${f.filename}`);
      assertEquals(res.status, 200);
      await bytesOf(res);
    }
    await t.app.settle();
    await bytesOf(await fetch(`${base}${H}/example/alpha/${a.filename}`)); // one hit

    const profile = join(dir.path, "profile");
    const dom = await run(chromium.path, chromiumArgs(profile, ["--dump-dom"], base), 90_000);
    const html = new TextDecoder().decode(dom.stdout);
    assert(dom.success, `chromium --dump-dom failed: ${new TextDecoder().decode(dom.stderr)}`);
    // The rendered DOM, as the browser parsed it.
    assert(html.includes("<title>Repoxy "), html.slice(0, 500));
    assert(/<strong>example\/alpha<\/strong>/.test(html));
    assert(/<strong>example\/beta<\/strong>/.test(html));
    assert(html.includes(`<td class="version">1.1.0</td>`));
    assert(html.includes(`<td class="version">2.3.4</td>`));
    assert(html.includes(`linux_amd64 <span class="muted">${formatBytes(a.bytes.length)}</span>`));
    assert(html.includes(`darwin_arm64 <span class="muted">${formatBytes(b.bytes.length)}</span>`));
    assert(
      html.includes(`"providers.v1" = "${base}v1/providers/${H}/"`),
      "the snippet names this server",
    );
    assert(html.includes("1 hit · 3 miss · 0 stale"));

    const shot = join(dir.path, "shot.png");
    const ss = await run(
      chromium.path,
      chromiumArgs(profile, [`--screenshot=${shot}`, "--window-size=1280,1600"], base),
      90_000,
    );
    assert(ss.success, `chromium --screenshot failed: ${new TextDecoder().decode(ss.stderr)}`);
    const png = await Deno.readFile(shot);
    assertEquals(pngSize(png), { width: 1280, height: 1600 });
    // A blank 1280×1600 page compresses to a few KB; text, tables and colour do not.
    assert(png.length > 30_000, `screenshot is suspiciously small (${png.length} bytes)`);
    const keep = Deno.env.get("REPOXY_KEEP_SCREENSHOT");
    if (keep) await Deno.copyFile(shot, keep);
  } finally {
    await server.shutdown(1000);
  }
});
