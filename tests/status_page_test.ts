import { clientSnippet } from "../lib/ops/client_snippet.ts";
/**
 * The status page and readiness endpoint at handler level (no browser; the
 * Chromium test is status_page_browser_test.ts).
 */
import { assert, assertEquals, assertMatch } from "../lib/deps/assert.ts";
import { join } from "../lib/deps/path.ts";
import {
  escapeHtml,
  formatBytes,
  formatDuration,
  renderStatusPage,
  type StatusPageData,
} from "../lib/ops/status_page.ts";
import { VERSION } from "../lib/base/version.ts";
import {
  bytesOf,
  jsonOf,
  makeTestApp,
  mirrorFixture,
  tempDir,
  tempLeftovers,
  TWO_PROVIDERS,
} from "./_helpers.ts";

const H = "registry.terraform.io";

/** Undoes escapeHtml's numeric references, to compare with plain text. */
function unescape(html: string): string {
  return html.replace(/&#(\d+);/g, (_, n) => String.fromCharCode(Number(n)));
}

Deno.test("escapeHtml, formatBytes, formatDuration", () => {
  assertEquals(
    escapeHtml(`<a href="x" onclick='y'>&</a>`),
    "&#60;a href=&#34;x&#34; onclick=&#39;y&#39;&#62;&#38;&#60;/a&#62;",
  );
  assertEquals(formatBytes(0), "0 B");
  assertEquals(formatBytes(1023), "1023 B");
  assertEquals(formatBytes(1536), "1.50 KiB");
  assertEquals(formatBytes(250 * 1024 * 1024), "250 MiB");
  assertEquals(formatBytes(5 * 1024 ** 4), "5.00 TiB");
  assertEquals(formatDuration(59_999), "59 s");
  assertEquals(formatDuration(3_725_000), "1 h 2 min");
  assertEquals(formatDuration(3 * 86_400_000 + 7_200_000), "3 d 2 h");
});

Deno.test("the status page lists cached providers, versions, platforms and sizes, hit ratios and the client snippet", async () => {
  await using t = await mirrorFixture({ providers: TWO_PROVIDERS });
  const { fake } = t;
  const a = fake.archive("alpha", "1.1.0", "linux_amd64");
  const b1 = fake.archive("beta", "2.3.4", "darwin_arm64");
  const b2 = fake.archive("beta", "2.3.4", "linux_arm64");
  for (const f of [a, b1, b2]) {
    await bytesOf(await t.get(`/${H}/example/${f.type}/${f.filename}`));
  }
  await t.app.settle();
  await bytesOf(await t.get(`/${H}/example/alpha/${a.filename}`)); // a hit: 1 of 4 archive answers

  const res = await t.get("/", { headers: { accept: "text/html" } });
  assertEquals(res.status, 200);
  assertEquals(res.headers.get("content-type"), "text/html; charset=utf-8");
  assertMatch(res.headers.get("content-security-policy") ?? "", /default-src 'none'/);
  assertEquals(res.headers.get("cache-control"), "no-store");
  const html = await res.text();
  assert(html.startsWith("<!doctype html>"));
  assert(!/<script/i.test(html), "no script on the page");
  const text = unescape(html);

  // One row per version, first row of a provider carries its name.
  const rows = [...html.matchAll(/<tr data-provider="([^"]+)">(.*?)<\/tr>/g)];
  assertEquals(rows.map((r) => r[1]), [`${H}/example/alpha`, `${H}/example/beta`]);
  assertMatch(rows[0]![2]!, /example\/alpha/);
  assertMatch(rows[0]![2]!, /<td class="version">1\.1\.0<\/td>/);
  assertMatch(
    rows[0]![2]!,
    new RegExp(`linux_amd64 <span class="muted">${formatBytes(a.bytes.length)}</span>`),
  );
  assertMatch(rows[1]![2]!, /<td class="version">2\.3\.4<\/td>.*darwin_arm64.*linux_arm64/);
  assertMatch(rows[1]![2]!, new RegExp(`>${formatBytes(b1.bytes.length + b2.bytes.length)}</td>$`));
  // Summary cards: count and size from the inventory, archive hit ratio 1/4.
  const total = a.bytes.length + b1.bytes.length + b2.bytes.length;
  assertMatch(
    text,
    new RegExp(
      `Cached archives</div><div class="big">3</div><div class="small">${formatBytes(total)}<`,
    ),
  );
  assertMatch(
    text,
    /Archive hit ratio<\/div><div class="big">25\.0 %<\/div><div class="small">1 hit · 3 miss · 0 stale</,
  );
  // The snippet for this instance, from the Host the request used.
  assert(text.includes(`"providers.v1" = "http://mirror.test/v1/providers/${H}/"`));
  assertMatch(html, /<code id="base-url">http:\/\/mirror\.test\/<\/code>/);
  // Upstream health: contacted and fine.
  assertMatch(
    html,
    /<strong>registry\.terraform\.io<\/strong>.*?<span class="badge ok">ok<\/span>/s,
  );
  assert(html.includes(`version ${VERSION}`));

  const head = await t.get("/", { method: "HEAD" });
  assertEquals(head.status, 200);
  assertEquals(head.body, null);
  const post = await t.get("/", { method: "POST" });
  assertEquals(post.status, 405);
  await post.body?.cancel();
});

Deno.test("the status page uses publicUrl (https: network mirror block) and escapes upstream errors", async () => {
  await using dir = await tempDir();
  await using t = await makeTestApp(undefined, dir.path, {
    publicUrl: "https://mirror.example.com/tf",
    upstreams: { [H]: {} },
  });
  t.app.telemetry.onUpstream({
    hostname: H,
    url: "https://registry.terraform.io/v1/providers/x/y/versions",
    status: "error",
    error: `<img src=x onerror="alert(1)">`,
  });
  const html = await (await t.get("/")).text();
  assert(!html.includes("<img"), "an upstream's error text must not become markup");
  assert(html.includes("&#60;img src=x onerror=&#34;alert(1)&#34;&#62;"));
  assertMatch(html, /<span class="badge bad">failing<\/span>/);
  const text = unescape(html);
  assert(text.includes(`network_mirror {\n    url = "https://mirror.example.com/tf/"`));
  assert(text.includes(`"providers.v1" = "https://mirror.example.com/tf/v1/providers/${H}/"`));
  assertMatch(html, /Nothing is cached yet/);
});

Deno.test("renderStatusPage shows a never-contacted upstream and an empty ratio", () => {
  const data: StatusPageData = {
    version: "9.9.9",
    now: Date.UTC(2026, 0, 2),
    startedAt: Date.UTC(2026, 0, 1),
    baseUrl: "http://127.0.0.1:8080/",
    snippet: "host {}",
    cacheDir: "/var/lib/repoxy",
    offline: true,
    archives: 0,
    bytes: 0,
    inflightDownloads: 0,
    providers: [],
    ratios: { archive: { hits: 0, stale: 0, total: 0 }, metadata: { hits: 2, stale: 1, total: 4 } },
    upstreams: [{
      hostname: "r.example",
      url: "https://r.example",
      health: { requests: 0, failures: 0 },
    }],
  };
  const html = renderStatusPage(data);
  assertMatch(html, /not contacted yet/);
  assertMatch(
    html,
    /Archive hit ratio<\/div><div class="big">–<\/div><div class="small">no requests yet/,
  );
  assertMatch(
    html,
    /Metadata hit ratio<\/div><div class="big">75\.0 %<\/div><div class="small">2 hit · 1 miss · 1 stale/,
  );
  assertMatch(html, /Uptime<\/div><div class="big">24 h 0 min</);
  assertMatch(html, /<span class="badge bad">offline<\/span>/);
});

Deno.test("/-/readyz is 200 while tmp/ is writable and 503 with the reason when it is not", async () => {
  await using dir = await tempDir();
  await using t = await makeTestApp(undefined, dir.path);
  const ok = await t.get("/-/readyz");
  assertEquals(ok.status, 200);
  assertEquals((await jsonOf(ok) as { status: string }).status, "ready");
  assertEquals(await tempLeftovers(dir.path), [], "the probe cleans up");

  // A file where the directory should be: fails even for root, unlike chmod.
  await Deno.remove(join(dir.path, "tmp"), { recursive: true });
  await Deno.writeTextFile(join(dir.path, "tmp"), "not a dir");
  // A probe that passed is reused for a second: readyz is open to anyone and
  // must not be a way to make the disk fsync without pause.
  const reused = await t.get("/-/readyz");
  assertEquals(reused.status, 200);
  await reused.body?.cancel();
  await new Promise((r) => setTimeout(r, 1_050));
  const bad = await t.get("/-/readyz");
  assertEquals(bad.status, 503);
  assertEquals(bad.headers.get("cache-control"), "no-store");
  const body = await jsonOf(bad) as { status: string; reason: string };
  assertEquals(body.status, "unavailable");
  assertMatch(body.reason, new RegExp(`cache directory ${dir.path} is not writable: .+`));
  // Liveness is unaffected: restarting would not fix a full or broken disk.
  const live = await t.get("/-/healthz");
  assertEquals(live.status, 200);
  await live.body?.cancel();
});

Deno.test("client snippet: with auth it shows the credentials blocks Terraform reads", () => {
  const open = clientSnippet("https://mirror.example.com:8443/", ["registry.terraform.io"], true);
  assertEquals(open.includes("credentials"), false);
  const shut = clientSnippet(
    "https://mirror.example.com:8443/",
    ["registry.terraform.io"],
    true,
    true,
  );
  assertEquals(shut.includes(`credentials "mirror.example.com:8443" {`), true);
  assertEquals(shut.includes(`credentials "registry.terraform.io" {`), true);
  assertEquals(shut.includes(`url = "https://mirror.example.com:8443/"`), true);
});
