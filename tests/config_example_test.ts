import { buildConfig, type ConfigEnv, DEFAULT_LIMITS } from "../lib/config/config.ts";
import { assert, assertEquals } from "../lib/deps/assert.ts";

Deno.test("config.example.json is valid and shows every key", async () => {
  const raw = JSON.parse(
    await Deno.readTextFile(new URL("../config.example.json", import.meta.url)),
  );
  const pem = "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n";
  const key = "-----BEGIN PGP PUBLIC KEY BLOCK-----\nx\n-----END PGP PUBLIC KEY BLOCK-----\n";
  const env: ConfigEnv = {
    readTextFile: (p) => Promise.resolve(p.endsWith(".asc") ? key : pem),
    getEnv: (n) =>
      n === "REPOXY_TFE_TOKEN"
        ? "t0ken"
        : n === "REPOXY_CI_TOKEN"
        ? "ci-token-0123456789"
        : n === "REPOXY_URL_KEY"
        ? "k".repeat(32)
        : undefined,
    cwd: () => "/",
  };
  const c = await buildConfig(raw, {}, "/etc/repoxy", env);
  assertEquals(c.upstreams.get("tfe.example.com")?.token, "t0ken");
  assertEquals(c.upstreams.get("tfe.example.com")?.trustedKeys.length, 1);
  assertEquals(c.auth?.tokens.map((t) => t.name), ["ci", "team-a"]);
  assertEquals(c.limits.archiveBytes, 2 * 2 ** 30);
  // Every documented key appears in the example and in the README table.
  const readme = await Deno.readTextFile(new URL("../README.md", import.meta.url));
  const keys = ["listen", "tls.cert", "tls.key", "tls.http2", "publicUrl", "cacheDir", "upstreams"]
    .concat(["upstreams.<host>.url", "upstreams.<host>.token", "upstreams.<host>.trustedKeys"])
    .concat([
      "defaultUpstream",
      "metadataTtl",
      "upstreamTimeout",
      "offline",
      "logFormat",
      "maxCacheSize",
      "allowPrivateNetworks",
      "egressAllow",
      "auth.tokens",
      "auth.protectOps",
      "auth.urlTtl",
      "auth.urlKey",
      "backgroundVerify.rate",
      "backgroundVerify.interval",
    ])
    .concat(
      Object.keys(raw.limits).map((k) => `limits.${k}`),
    );
  for (const k of keys) {
    assertEquals(readme.includes(`\`${k}\``), true, `README documents ${k}`);
    const path = k.split(".").map((part) => part === "<host>" ? "tfe.example.com" : part);
    // deno-lint-ignore no-explicit-any
    const shown = path.reduce((o: any, part) => o?.[part], raw);
    assert(shown !== undefined, `config.example.json shows ${k}`);
  }
  assertEquals(
    Object.keys(raw.limits).length,
    Object.keys(DEFAULT_LIMITS).length,
    "config.example.json shows every limit",
  );
});
