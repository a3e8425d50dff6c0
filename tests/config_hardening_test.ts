import { buildConfig, ConfigError, DEFAULT_LIMITS } from "../lib/config/config.ts";
import { createHash } from "../lib/deps/crypto.ts";
import { assertEquals, assertRejects } from "../lib/deps/assert.ts";

const env = {
  readTextFile: () => Promise.reject(new Error("no file")),
  getEnv: (n: string) => (n === "REPOXY_T" ? "a-client-token-0123" : undefined),
  cwd: () => "/",
};
const build = (raw: Record<string, unknown>) => buildConfig(raw, {}, "/", env);

Deno.test("hardening: every bound has a default, so a bare config is bounded", async () => {
  const c = await build({});
  assertEquals(c.limits, { ...DEFAULT_LIMITS });
  assertEquals(c.egress, { allowPrivateNetworks: false, egressAllow: [] });
  assertEquals(c.auth, undefined);
  assertEquals(c.backgroundVerify, { bytesPerSecond: 4 * 2 ** 20, intervalMs: 86_400_000 });
});

Deno.test("hardening: limits parse sizes, rates, durations and counts", async () => {
  const c = await build({
    limits: {
      metadataMemory: "1MB",
      archiveSize: 1234567,
      minTransferRate: "2KiB/s",
      headerTimeout: "2s",
      idleTimeout: 5,
      maxConnections: 7,
    },
  });
  assertEquals(c.limits.metadataMemoryBytes, 1_000_000);
  assertEquals(c.limits.archiveBytes, 1234567);
  assertEquals(c.limits.minTransferRate, 2048);
  assertEquals(c.limits.headerTimeoutMs, 2000);
  assertEquals(c.limits.idleTimeoutMs, 5000);
  assertEquals(c.limits.maxConnections, 7);
  assertEquals(c.limits.negativeTtlMs, DEFAULT_LIMITS.negativeTtlMs);
});

Deno.test("hardening: bad values name the key", async () => {
  const cases: Array<[Record<string, unknown>, string]> = [
    [{ limits: { nope: 1 } }, `unknown key "limits.nope"`],
    [{ limits: { archiveSize: "big" } }, `"limits.archiveSize"`],
    [{ limits: { maxConnections: 0 } }, `"limits.maxConnections"`],
    [{ limits: { headerTimeout: "1ms" } }, `"limits.headerTimeout"`],
    [{ limits: [] }, `"limits" must be an object`],
    [{ allowPrivateNetworks: "yes" }, `"allowPrivateNetworks"`],
    [{ egressAllow: ["http://x/"] }, `"egressAllow"`],
    [{ egressAllow: "10.0.0.0/8" }, `"egressAllow"`],
    // CIDRs the egress policy could not use (it would drop them silently).
    [{ egressAllow: ["10.0.0.0/33"] }, `"egressAllow"`],
    [{ egressAllow: ["10.0.0/8"] }, `"egressAllow"`],
    [{ egressAllow: ["fd00:::1/8"] }, `"egressAllow"`],
    [{ egressAllow: ["fd00::/129"] }, `"egressAllow"`],
    [{ egressAllow: ["artifacts.example:99999"] }, `"egressAllow"`],
    [{ egressAllow: ["[fd00:::1]"] }, `"egressAllow"`],
    [{ egressAllow: ["300.0.0.0/8"] }, `"egressAllow"`],
    [{ egressAllow: ["10.0.0.999"] }, `"egressAllow"`],
    [{ auth: { tokens: [] } }, `"auth.tokens"`],
    [{ auth: { tokens: [{ name: "a" }] } }, `"auth.tokens[0]" needs exactly one`],
    [{ auth: { tokens: [{ name: "a", token: "short" }] } }, `at least 16`],
    [{ auth: { tokens: [{ name: "a", sha256: "xyz" }] } }, `"auth.tokens[0].sha256"`],
    [{ auth: { tokens: [{ name: "a", token: "env:MISSING" }] } }, `MISSING`],
    [
      {
        auth: {
          tokens: [{ name: "a", token: "env:REPOXY_T" }, { name: "a", token: "env:REPOXY_T" }],
        },
      },
      `used twice`,
    ],
    [{ auth: { tokens: [{ name: "a", token: "env:REPOXY_T" }], urlTtl: "1s" } }, `"auth.urlTtl"`],
    [
      { auth: { tokens: [{ name: "a", token: "env:REPOXY_T" }], urlKey: "short" } },
      `"auth.urlKey"`,
    ],
    [{ backgroundVerify: { rate: "fast" } }, `"backgroundVerify.rate"`],
    // Past 2^31-1 ms a timer fires at once: a 30-day interval would verify non-stop.
    [{ backgroundVerify: { interval: "720h" } }, `"backgroundVerify.interval" must be at most`],
    [{ limits: { transferRateWindow: "600h" } }, `"limits.transferRateWindow" must be at most`],
    [{ upstreamTimeout: "600h" }, `"upstreamTimeout" must be at most`],
  ];
  for (const [raw, msg] of cases) {
    await assertRejects(() => build(raw), ConfigError, msg);
  }
});

Deno.test("hardening: tokens are kept only as sha256, lowercased rules", async () => {
  const c = await build({
    egressAllow: ["Artifacts.Example:443", "10.0.0.0/8", "[fd00::1]:80", "::ffff:10.0.0.0/104"],
    auth: {
      tokens: [
        { name: "ci", token: "env:REPOXY_T", upstreams: ["Registry.Terraform.io"] },
        { name: "ro", sha256: "AB".repeat(32), namespaces: ["HashiCorp"] },
      ],
    },
  });
  assertEquals(c.egress.egressAllow, [
    "artifacts.example:443",
    "10.0.0.0/8",
    "[fd00::1]:80",
    "::ffff:10.0.0.0/104",
  ]);
  const [ci, ro] = c.auth!.tokens;
  assertEquals(ci, {
    name: "ci",
    sha256: createHash("sha256").update("a-client-token-0123").digest("hex"),
    upstreams: ["registry.terraform.io"],
  });
  assertEquals(ro, { name: "ro", sha256: "ab".repeat(32), namespaces: ["hashicorp"] });
  assertEquals(JSON.stringify(c.auth).includes("a-client-token-0123"), false);
  assertEquals(c.auth!.protectOps, true);
  assertEquals(c.auth!.urlTtlMs, 3_600_000);
});
