/**
 * Every config error names its key path, checked on the message itself
 * (node:assert's `rejects` takes a third argument as the failure message, not
 * as text to find, so the older hardening table checks only the class). A
 * file with several problems gets them all, one line each.
 */
import { buildConfig, ConfigError } from "../lib/config/config.ts";
import { assertEquals, assertMatch } from "../lib/deps/assert.ts";

const env = {
  readTextFile: () => Promise.reject(new Error("no file")),
  getEnv: (n: string) => (n === "REPOXY_T" ? "a-client-token-0123" : undefined),
  cwd: () => "/",
};
const T = { name: "a", token: "env:REPOXY_T" };

async function problems(raw: unknown): Promise<readonly string[]> {
  try {
    await buildConfig(raw, {}, "/", env);
  } catch (e) {
    if (e instanceof ConfigError) return e.problems;
    throw e;
  }
  return [];
}

Deno.test("each problem's line starts with its key path", async () => {
  const cases: Array<[unknown, string]> = [
    [{ limits: { nope: 1 } }, `unknown key "limits.nope" (known: metadataMemory,`],
    [{ limits: { archiveSize: "big" } }, `"limits.archiveSize" must be a size`],
    [{ limits: { maxConnections: 0 } }, `"limits.maxConnections" must be a positive integer`],
    [{ limits: { headerTimeout: "1ms" } }, `"limits.headerTimeout" must be at least 100ms`],
    [{ limits: { metadataDocument: "1B" } }, `"limits.metadataDocument" must be at least 1KB`],
    [{ limits: { transferRateWindow: "10ms" } }, `"limits.transferRateWindow" must be at least 1s`],
    [{ limits: [] }, `"limits" must be an object, got an array`],
    [{ allowPrivateNetworks: "yes" }, `"allowPrivateNetworks" must be true or false`],
    [{ egressAllow: ["http://x/"] }, `"egressAllow" entries are "host", "host:port" or a CIDR`],
    [{ egressAllow: "10.0.0.0/8" }, `"egressAllow" must be an array of non-empty strings`],
    [{ auth: { tokens: [] } }, `"auth.tokens" must be a non-empty array`],
    [{ auth: { tokens: [{ name: "a" }] } }, `"auth.tokens[0]" needs exactly one of`],
    [
      { auth: { tokens: [{ name: "a", token: "short" }] } },
      `"auth.tokens[0].token" must be at least 16`,
    ],
    [
      { auth: { tokens: [{ name: "a", sha256: "xyz" }] } },
      `"auth.tokens[0].sha256" must be 64 hex`,
    ],
    [
      { auth: { tokens: [{ name: "a b", sha256: "ab".repeat(32) }] } },
      `"auth.tokens[0].name" must be 1-64`,
    ],
    [
      { auth: { tokens: [{ name: "a", token: "env:MISSING" }] } },
      `"auth.tokens[0].token" names environment variable MISSING`,
    ],
    [{ auth: { tokens: [T, T] } }, `"auth.tokens[1].name": "a" is used twice`],
    [{ auth: { tokens: [T], urlTtl: "1s" } }, `"auth.urlTtl" must be at least 1m`],
    [{ auth: { tokens: [T], urlKey: "short" } }, `"auth.urlKey" must be at least 32 characters`],
    [{ auth: { tokens: [T], extra: 1 } }, `unknown key "auth.extra"`],
    [{ backgroundVerify: { rate: "fast" } }, `"backgroundVerify.rate" must be a size`],
    [
      { backgroundVerify: { interval: "720h" } },
      `"backgroundVerify.interval" must be at most 596h`,
    ],
    [{ upstreamTimeout: "600h" }, `"upstreamTimeout" must be at most 596h`],
    [{ upstreamTimeout: "10ms" }, `"upstreamTimeout" must be at least 100ms`],
    [{ cacheDir: "" }, `"cacheDir" must not be empty`],
    [{ publicUrl: "ftp://x" }, `"publicUrl" must be an http(s) URL, got "ftp://x"`],
    [{ maxCacheSize: "lots" }, `"maxCacheSize" must be a size such as "50GB"`],
    [{ tls: { http2: true } }, `"tls.http2" needs "tls.cert" and "tls.key"`],
    [
      { upstreams: { "a.example": { trustedKeys: [5] } } },
      `"upstreams.a.example.trustedKeys[0]" must be`,
    ],
    [
      { upstreams: { "a.example": { url: "https://u:p@a.example" } } },
      `"upstreams.a.example.url" must not carry credentials`,
    ],
    [{ upstreams: { "Bad_Host": {} } }, `"upstreams.Bad_Host" is not a valid registry hostname`],
  ];
  // valibot's record drops these keys silently; an upstream must not vanish.
  for (const k of ["__proto__", "constructor", "prototype"]) {
    cases.push([JSON.parse(`{"upstreams": {"${k}": {}}}`), `"upstreams.${k}" is a reserved name`]);
    cases.push([JSON.parse(`{"limits": {"${k}": 1}}`), `unknown key "limits.${k}"`]);
  }
  for (const [raw, start] of cases) {
    const got = await problems(raw);
    assertEquals(got.length, 1, `${JSON.stringify(raw)}: ${got.join(" | ")}`);
    assertEquals(got[0]!.startsWith(start), true, `${JSON.stringify(raw)}: got ${got[0]}`);
  }
});

Deno.test("a file with several problems gets every one, each naming its key", async () => {
  const got = await problems({
    listen: "nowhere",
    offline: 1,
    logFormat: "xml",
    limits: { archiveSize: -1, idleTimeout: "forever" },
    egressAllow: ["ok.example", "bad entry"],
    typo: true,
  });
  const keys = got.map((p) => /^(?:unknown key )?"([^"]+)"/.exec(p)?.[1]).sort();
  assertEquals(keys, [
    "egressAllow",
    "limits.archiveSize",
    "limits.idleTimeout",
    "listen",
    "logFormat",
    "offline",
    "typo",
  ]);
  for (const p of got) assertMatch(p, /^(unknown key )?"/);
});
