/**
 * The status page at `/`: plain HTML and inline CSS, no script. A pure
 * function of {@link StatusPageData}, so it is tested with strings; every
 * value that reaches the markup goes through {@link escapeHtml}.
 * @module
 */
import type { InventoryProvider } from "../cache/inventory.ts";
import type { UpstreamHealth } from "./telemetry.ts";
import type { StorageFigures } from "./storage_metrics.ts";

/** Everything the page shows. */
export interface StatusPageData {
  version: string;
  now: number;
  startedAt: number;
  /** Base URL clients use for this instance (ends with `/`). */
  baseUrl: string;
  /** The CLI configuration block for this instance. */
  snippet: string;
  /** Absent for a client whose token has rules (it is about every provider). */
  cacheDir?: string;
  offline: boolean;
  archives: number;
  bytes: number;
  /** Absent for a client whose token has rules: it counts hidden providers' downloads too. */
  inflightDownloads?: number;
  providers: InventoryProvider[];
  /** Absent for a client whose token has rules: they count hidden providers' requests too. */
  ratios?: Record<"archive" | "metadata", { hits: number; stale: number; total: number }>;
  /** `tokenKey`: the config key of the token it is reached with (default `upstreams.{host}.token`). */
  upstreams: Array<{ hostname: string; url: string; health: UpstreamHealth; tokenKey?: string }>;
  /**
   * The shared bucket as this replica sees it (`storage.kind: s3`); absent on
   * the local disk alone, and for a client whose token has rules.
   */
  storage?: StorageFigures & { leases?: Record<string, number> };
  /** Stored registry modules, moved upstream tags, and the git CLI's state. */
  modules?: {
    git: string;
    stored: Array<{ name: string; size: number; commit?: string }>;
    moved: Array<{ module: string; source: string; pinned: string; upstream: string }>;
  };
}

/** Escapes text for HTML element content and double- or single-quoted attributes. */
export function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** Formats a byte count with binary units (`1.5 MiB`). */
export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ["KiB", "MiB", "GiB", "TiB", "PiB"];
  let v = n;
  let i = -1;
  do {
    v /= 1024;
    i++;
  } while (v >= 1024 && i < units.length - 1);
  return `${v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2)} ${units[i]}`;
}

/** Formats a duration in milliseconds as a short, human-sized string (`3 h 5 min`). */
export function formatDuration(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${s % 60} s`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h} h ${m % 60} min`;
  return `${Math.floor(h / 24)} d ${h % 24} h`;
}

function ratio(r: { hits: number; stale: number; total: number }): { big: string; small: string } {
  if (r.total === 0) return { big: "–", small: "no requests yet" };
  const pct = ((r.hits + r.stale) / r.total) * 100;
  const misses = r.total - r.hits - r.stale;
  return {
    big: `${pct >= 99.95 || pct === 0 ? pct.toFixed(0) : pct.toFixed(1)} %`,
    small: `${r.hits} hit · ${misses} miss · ${r.stale} stale`,
  };
}

function when(at: number | undefined, now: number): string {
  if (at === undefined) return `<span class="muted">never</span>`;
  const iso = new Date(at).toISOString();
  return `<time datetime="${escapeHtml(iso)}" title="${escapeHtml(iso)}">${
    escapeHtml(formatDuration(now - at))
  } ago</time>`;
}

/** The shared bucket as this replica sees it, and what its local tier did. */
function storageSection(f: NonNullable<StatusPageData["storage"]>, now: number, local: number) {
  const state = f.reachable
    ? `<span class="badge ok">reachable</span>`
    : `<span class="badge bad">unreachable</span>`;
  const rows: Array<[string, string]> = [
    ["Storage", `s3 · <code>${escapeHtml(f.bucket)}</code>`],
    ["Replica", `<code>${escapeHtml(f.replicaId)}</code>`],
    ["Bucket", `${state} since ${when(f.since, now)}`],
    [
      "Last bucket error",
      f.lastError === undefined
        ? `<span class="muted">none</span>`
        : `${escapeHtml(f.lastError)} (${when(f.lastErrorAt, now)}; ${f.errors} since start)`,
    ],
    ["Local tier", escapeHtml(formatBytes(local))],
    [
      "Fills from the bucket",
      escapeHtml(`${f.tier.fills} (${formatBytes(f.tier.fillBytes)})`),
    ],
    [
      "Uploads to the bucket",
      escapeHtml(
        `${f.tier.uploads} (${formatBytes(f.tier.uploadBytes)}), ${f.tier.uploadFailures} failed`,
      ),
    ],
  ];
  if (f.leases) {
    rows.push([
      "Fleet leases",
      escapeHtml(Object.entries(f.leases).map(([k, v]) => `${k} ${v}`).join(" · ")),
    ]);
  }
  return `<h2 id="storage">Storage</h2>
<table class="storage"><tbody>
${rows.map(([k, v]) => `<tr><th>${escapeHtml(k)}</th><td>${v}</td></tr>`).join("\n")}
</tbody></table>
`;
}

function card(label: string, big: string, small: string): string {
  return `<div class="card"><div class="label">${escapeHtml(label)}</div><div class="big">${
    escapeHtml(big)
  }</div><div class="small">${escapeHtml(small)}</div></div>`;
}

function upstreamRows(d: StatusPageData): string {
  if (d.upstreams.length === 0) {
    return `<tr><td colspan="5" class="muted">No upstreams are configured.</td></tr>`;
  }
  return d.upstreams.map(({ hostname, url, health: h, tokenKey }) => {
    let state: string;
    const lastOk = h.lastSuccess?.at ?? -1;
    const lastBad = h.lastFailure?.at ?? -1;
    // Refused credentials are the operator's to fix, not the upstream's
    // outage: said in words, with the config key, until a success follows.
    const cred = h.credentials && h.credentials.at >= lastOk ? h.credentials : undefined;
    if (h.requests === 0) state = `<span class="badge idle">not contacted yet</span>`;
    else if (cred) {
      state = `<span class="badge bad">credentials refused</span><div class="small">${
        escapeHtml(
          `HTTP ${cred.status}: ${tokenKey ?? `upstreams.${hostname}.token`} ${
            cred.problem === "missing" ? "is not set" : "was rejected"
          }`,
        )
      }</div>`;
    } else if (lastBad > lastOk) state = `<span class="badge bad">failing</span>`;
    else state = `<span class="badge ok">ok</span>`;
    const failure = h.lastFailure
      ? `${when(h.lastFailure.at, d.now)}<div class="small">${
        escapeHtml(
          h.lastFailure.status === "error"
            ? (h.lastFailure.error ?? "no response")
            : `HTTP ${h.lastFailure.status}`,
        )
      } · ${escapeHtml(new URL(h.lastFailure.url).host)}</div>`
      : `<span class="muted">never</span>`;
    const success = h.lastSuccess
      ? `${when(h.lastSuccess.at, d.now)}<div class="small">HTTP ${h.lastSuccess.status} · ${
        escapeHtml(new URL(h.lastSuccess.url).host)
      }</div>`
      : `<span class="muted">never</span>`;
    return `<tr><td><strong>${escapeHtml(hostname)}</strong><div class="small">${
      escapeHtml(url)
    }</div></td><td>${state}</td><td class="num">${h.requests}<div class="small">${h.failures} failed</div></td><td>${success}</td><td>${failure}</td></tr>`;
  }).join("\n");
}

function moduleRows(d: StatusPageData): string {
  const m = d.modules;
  if (!m) return "";
  const rows = m.stored.map((s) =>
    `<tr data-module="${escapeHtml(s.name)}"><td>${escapeHtml(s.name)}</td><td><code>${
      escapeHtml(s.commit?.slice(0, 12) ?? "")
    }</code></td><td class="num">${escapeHtml(formatBytes(s.size))}</td></tr>`
  ).join("\n");
  const moved = m.moved.map((t) =>
    `<li data-moved="${escapeHtml(t.module)}"><strong>${
      escapeHtml(t.module)
    }</strong>: upstream <code>${escapeHtml(t.source)}</code> now names <code>${
      escapeHtml(t.upstream.slice(0, 12))
    }</code>; serving the pinned <code>${escapeHtml(t.pinned.slice(0, 12))}</code></li>`
  ).join("\n");
  return `<h2 id="modules">Cached modules</h2>
<p class="small">git CLI: ${escapeHtml(m.git)}</p>
${
    rows
      ? `<table class="cached"><thead><tr><th>Module</th><th>Commit</th><th class="num">Size</th></tr></thead><tbody>\n${rows}\n</tbody></table>`
      : `<p class="muted">No module is stored yet.</p>`
  }
${moved ? `<h3>Moved upstream tags</h3>\n<ul class="moved">\n${moved}\n</ul>` : ""}`;
}

function providerRows(d: StatusPageData): string {
  if (d.providers.length === 0) {
    return `<p class="muted">Nothing is cached yet. Archives appear here after the first <code>terraform init</code> or <code>tofu init</code> through this mirror.</p>`;
  }
  const rows: string[] = [];
  for (const g of d.providers) {
    const addr = `${g.provider.hostname}/${g.provider.namespace}/${g.provider.type}`;
    g.versions.forEach((v, i) => {
      const chips = v.platforms.map((p) =>
        `<span class="chip">${
          escapeHtml(`${p.platform.os}_${p.platform.arch}`)
        } <span class="muted">${escapeHtml(formatBytes(p.size))}</span></span>`
      ).join(" ");
      const size = v.platforms.reduce((n, p) => n + p.size, 0);
      const first = i === 0
        ? `<td rowspan="${g.versions.length}" class="provider"><strong>${
          escapeHtml(`${g.provider.namespace}/${g.provider.type}`)
        }</strong><div class="small">${escapeHtml(g.provider.hostname)}</div><div class="small">${
          escapeHtml(formatBytes(g.bytes))
        } total</div></td>`
        : "";
      rows.push(
        `<tr data-provider="${escapeHtml(addr)}">${first}<td class="version">${
          escapeHtml(v.version)
        }</td><td>${chips}</td><td class="num">${escapeHtml(formatBytes(size))}</td></tr>`,
      );
    });
  }
  return `<table class="cached"><thead><tr><th>Provider</th><th>Version</th><th>Platforms</th><th class="num">Size</th></tr></thead><tbody>\n${
    rows.join("\n")
  }\n</tbody></table>`;
}

const CSS = `
:root{--bg:#f6f7f9;--fg:#1d2330;--muted:#6b7280;--card:#fff;--line:#e3e6eb;--accent:#5b3fd1;--ok:#127a3a;--okbg:#e3f5e9;--bad:#b42318;--badbg:#fdecea;--code:#0f1424;--codefg:#e6e8ef}
@media (prefers-color-scheme:dark){:root{--bg:#10131a;--fg:#e6e8ef;--muted:#9aa3b2;--card:#181c25;--line:#2a303c;--accent:#a996ff;--ok:#6fd39a;--okbg:#173324;--bad:#ff8a80;--badbg:#3a1a1a;--code:#0b0e14}}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
header{background:var(--card);border-bottom:1px solid var(--line)}
.wrap{max-width:1120px;margin:0 auto;padding:0 24px}
header .wrap{display:flex;align-items:baseline;gap:16px;flex-wrap:wrap;padding-top:18px;padding-bottom:18px}
h1{font-size:22px;margin:0;color:var(--accent)}
h2{font-size:17px;margin:32px 0 12px}
.muted{color:var(--muted)}
.small{font-size:12.5px;color:var(--muted)}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(190px,1fr));gap:14px;margin-top:24px}
.card{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:14px 16px}
.card .label{font-size:12.5px;text-transform:uppercase;letter-spacing:.04em;color:var(--muted)}
.card .big{font-size:26px;font-weight:600;margin:2px 0}
table{width:100%;border-collapse:collapse;background:var(--card);border:1px solid var(--line);border-radius:10px;overflow:hidden}
th,td{text-align:left;padding:9px 12px;border-bottom:1px solid var(--line);vertical-align:top}
th{font-size:12.5px;text-transform:uppercase;letter-spacing:.04em;color:var(--muted);font-weight:600}
tr:last-child td{border-bottom:0}
td.num,th.num{text-align:right;white-space:nowrap}
td.version{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;white-space:nowrap}
.chip{display:inline-block;border:1px solid var(--line);border-radius:999px;padding:1px 9px;margin:2px 0;font-size:12.5px;white-space:nowrap}
.badge{display:inline-block;border-radius:999px;padding:1px 10px;font-size:12.5px;font-weight:600}
.badge.ok{background:var(--okbg);color:var(--ok)}
.badge.bad{background:var(--badbg);color:var(--bad)}
.badge.idle{border:1px solid var(--line);color:var(--muted)}
pre{background:var(--code);color:var(--codefg);border-radius:10px;padding:14px 16px;overflow:auto;font:13px/1.45 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;user-select:all}
code{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:.92em}
footer{margin:40px 0 32px;font-size:13px;color:var(--muted)}
a{color:var(--accent)}
`.trim();

/** Renders the complete status page. */
export function renderStatusPage(d: StatusPageData): string {
  const a = d.ratios && ratio(d.ratios.archive);
  const m = d.ratios && ratio(d.ratios.metadata);
  const cards = [
    card("Cached archives", String(d.archives), formatBytes(d.bytes)),
    a ? card("Archive hit ratio", a.big, a.small) : "",
    m ? card("Metadata hit ratio", m.big, m.small) : "",
    d.inflightDownloads === undefined ? "" : card(
      "Downloads in flight",
      String(d.inflightDownloads),
      d.offline ? "offline mode" : "from upstreams",
    ),
    card(
      "Uptime",
      formatDuration(d.now - d.startedAt),
      `since ${new Date(d.startedAt).toISOString().slice(0, 16).replace("T", " ")} UTC`,
    ),
  ].filter((c) => c !== "").join("\n");
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark">
<title>Repoxy ${escapeHtml(d.version)} · ${escapeHtml(d.baseUrl)}</title>
<style>${CSS}</style>
</head>
<body>
<header><div class="wrap"><h1>Repoxy</h1><span class="muted">caching mirror for Terraform and OpenTofu providers</span><span class="small">version ${
    escapeHtml(d.version)
  } · <code id="base-url">${escapeHtml(d.baseUrl)}</code>${
    d.offline ? ` · <span class="badge bad">offline</span>` : ""
  }</span></div></header>
<main class="wrap">
<section class="cards" aria-label="Summary">
${cards}
</section>

${d.storage ? storageSection(d.storage, d.now, d.bytes) : ""}
<h2 id="client-config">Client configuration</h2>
<p>Put this in <code>~/.terraformrc</code> (Terraform) or <code>~/.tofurc</code> (OpenTofu) — on Windows <code>%APPDATA%\\terraform.rc</code> or <code>%APPDATA%\\tofu.rc</code> — or point <code>TF_CLI_CONFIG_FILE</code> at a file holding it:</p>
<pre id="snippet">${escapeHtml(d.snippet)}</pre>

<h2 id="upstreams">Upstreams</h2>
<table class="upstreams"><thead><tr><th>Registry</th><th>State</th><th class="num">Requests</th><th>Last success</th><th>Last failure</th></tr></thead><tbody>
${upstreamRows(d)}
</tbody></table>

<h2 id="cached">Cached providers</h2>
${providerRows(d)}
${moduleRows(d)}

<footer>${
    d.cacheDir === undefined ? "" : `Cache directory <code>${escapeHtml(d.cacheDir)}</code> · `
  }<a href="/-/metrics">metrics</a> · <a href="/-/healthz">healthz</a> · <a href="/-/readyz">readyz</a> · page rendered ${
    escapeHtml(new Date(d.now).toISOString())
  }</footer>
</main>
</body>
</html>
`;
}
