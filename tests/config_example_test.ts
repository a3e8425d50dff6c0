import { buildConfig, type ConfigEnv, DEFAULT_LIMITS } from "../lib/config/config.ts";
import { ENV_OVERRIDES } from "../lib/config/env_overrides.ts";
import { assert, assertEquals, assertMatch } from "../lib/deps/assert.ts";
import { runCli } from "./_cli.ts";

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

/** Every `"REPOXY_…"` string literal in lib/: the variables the code reads by name. */
async function variablesRead(dir: URL, found = new Set<string>()): Promise<Set<string>> {
  for await (const e of Deno.readDir(dir)) {
    const at = new URL(e.name + (e.isDirectory ? "/" : ""), dir);
    if (e.isDirectory) await variablesRead(at, found);
    else if (e.name.endsWith(".ts")) {
      for (const m of (await Deno.readTextFile(at)).matchAll(/"(REPOXY_[A-Z0-9_]+)"/g)) {
        found.add(m[1]!);
      }
    }
  }
  return found;
}

Deno.test("every REPOXY_* variable the code reads is in --help and the README; each override names its key", async () => {
  const names = await variablesRead(new URL("../lib/", import.meta.url));
  // The scan itself works: the overrides and the two serve-only variables are found.
  for (const o of ENV_OVERRIDES) assert(names.has(o.name), o.name);
  assert(names.has("REPOXY_TRACE") && names.has("REPOXY_OTEL_PROPAGATE_TO"), [...names].join());
  const [top, config] = await Promise.all([runCli(["--help"]), runCli(["config", "--help"])]);
  assertEquals([top.code, config.code], [0, 0], top.stderr + config.stderr);
  const readme = await Deno.readTextFile(new URL("../README.md", import.meta.url));
  for (const name of names) {
    assert(`${top.stdout}\n${config.stdout}`.includes(name), `--help names ${name}`);
    assert(readme.includes(`\`${name}`), `README names ${name}`);
  }
  for (const o of ENV_OVERRIDES) {
    assertMatch(config.stdout, new RegExp(`^  ${o.name} +${o.key.replace(".", "\\.")}$`, "m"));
    const row = readme.split("\n").find((l) => l.startsWith("|") && l.includes(`\`${o.name}\``));
    assert(row?.includes(`\`${o.key}\``), `README's env table maps ${o.name} to ${o.key}`);
  }
});
