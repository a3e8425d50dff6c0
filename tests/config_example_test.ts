import { parseDurationMs } from "../lib/base/duration.ts";
import { parseSize } from "../lib/base/size.ts";
import { CONFIG_SCHEMA } from "../lib/config/schema.ts";
import { buildConfig, type ConfigEnv, DEFAULT_LIMITS } from "../lib/config/config.ts";
import { effectiveConfig } from "../lib/config/effective.ts";
import { ENV_OVERRIDES } from "../lib/config/env_overrides.ts";
import { assert, assertEquals, assertMatch } from "../lib/deps/assert.ts";
import { runCli } from "./_cli.ts";

/** Reads config.example.json; its files and variables come from fakes. */
async function example() {
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
  return { raw, env };
}

Deno.test("config.example.json is valid and shows every key", async () => {
  const { raw, env } = await example();
  const c = await buildConfig(raw, {}, "/etc/repoxy", env);
  assertEquals(c.upstreams.get("tfe.example.com")?.token, "t0ken");
  assertEquals(c.upstreams.get("tfe.example.com")?.trustedKeys.length, 1);
  assertEquals(c.auth?.tokens.map((t) => t.name), ["ci", "team-a"]);
  assertEquals(c.limits.archiveBytes, 2 * 2 ** 30);
  // Every key the schema takes is in the README table and, but for the
  // sections a standalone instance does not use, in the example.
  const readme = await Deno.readTextFile(new URL("../README.md", import.meta.url));
  const keys = schemaKeys(CONFIG_SCHEMA);
  assert(keys.includes("limits.archiveSize") && keys.includes("tls.http2"), keys.join());
  for (const k of keys) {
    // A small object may be one row (`storage.credentials`); a top-level section may not.
    const parent = k.slice(0, k.lastIndexOf("."));
    const named = (p: string) => readme.includes(`\`${p}\``);
    assert(named(k) || (parent.includes(".") && named(parent)), `README documents ${k}`);
  }
  const notInExample = ["via", "storage"];
  for (const k of keys.filter((k) => !notInExample.includes(k.split(".")[0]!))) {
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

/**
 * The leaf key paths `schema` takes (`<host>` for a record's key); arrays are
 * leaves.
 */
// deno-lint-ignore no-explicit-any
function schemaKeys(schema: any, prefix = ""): string[] {
  let s = schema;
  while (s.type === "optional" || s.type === "nullable") s = s.wrapped;
  if (s.type === "union" || s.type === "variant") {
    const inner = s.options.flatMap((o: unknown) => schemaKeys(o, prefix));
    const opened = inner.filter((k: string) => k !== prefix);
    return opened.length ? [...new Set<string>(opened)] : [prefix];
  }
  if (s.type === "record") return schemaKeys(s.value, `${prefix}.<host>`);
  if (s.type !== "strict_object" && s.type !== "object") return [prefix];
  return Object.entries(s.entries).filter(([k]) => k !== "$schema").flatMap(([k, e]) =>
    schemaKeys(e, prefix ? `${prefix}.${k}` : k)
  );
}

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
  const commands = await Deno.readTextFile(new URL("../docs/commands.md", import.meta.url));
  for (const name of names) {
    assert(`${top.stdout}\n${config.stdout}`.includes(name), `--help names ${name}`);
    assert(readme.includes(`\`${name}`), `README names ${name}`);
  }
  for (const o of ENV_OVERRIDES) {
    assertMatch(config.stdout, new RegExp(`^  ${o.name} +${o.key.replace(".", "\\.")}$`, "m"));
    for (const [doc, text] of [["README", readme], ["docs/commands.md", commands]] as const) {
      const row = text.split("\n").find((l) => l.startsWith("|") && l.includes(`\`${o.name}\``));
      assert(row?.includes(`\`${o.key}\``), `${doc}'s env table maps ${o.name} to ${o.key}`);
    }
  }
});

Deno.test("config check's effective config shows every key the schema takes", async () => {
  const { raw, env } = await example();
  const full = {
    ...raw,
    via: { url: "https://central.corp/", token: "central-token" },
    storage: {
      kind: "s3",
      endpoint: "http://rgw.corp:7480",
      bucket: "mirror-bucket",
      credentials: { accessKeyId: "id", secretAccessKey: "secret", sessionToken: "session" },
      retention: { maxSize: "1TB", maxAge: "90d" },
    },
  };
  const shown = effectiveConfig(await buildConfig(full, {}, "/etc/repoxy", env));
  const missing = schemaKeys(CONFIG_SCHEMA).filter((k) => {
    const path = k.split(".").map((part) => part === "<host>" ? "tfe.example.com" : part);
    // deno-lint-ignore no-explicit-any
    return path.reduce((o: any, part) => o?.[part], shown) === undefined;
  });
  assertEquals(missing, [], "effective.ts leaves these keys out");
});

Deno.test("the README config table's defaults are what config check shows for an empty file (and a bare storage section)", async () => {
  const { env } = await example();
  const shown = effectiveConfig(await buildConfig({}, {}, "/etc/repoxy", env));
  // A section's defaults show once the section is there.
  const storage = { kind: "s3", endpoint: "http://rgw.corp:7480", bucket: "mirror-bucket" };
  shown.storage = effectiveConfig(await buildConfig({ storage }, {}, "/etc/repoxy", env)).storage;
  const readme = await Deno.readTextFile(new URL("../README.md", import.meta.url));
  const same = (doc: string, actual: unknown): boolean => {
    const text = doc.replace(/^"(.*)"$/, "$1");
    if (typeof actual === "boolean") return text === String(actual);
    if (typeof actual === "number") return parseSize(text) === actual;
    if (typeof actual !== "string") return false;
    const ms = parseDurationMs(actual);
    return text === actual || (ms !== undefined && parseDurationMs(text) === ms);
  };
  const checked: string[] = [];
  const wrong: string[] = [];
  for (const line of readme.split("\n")) {
    // One key, one literal default: | `limits.idleTimeout` | `"60s"` | ...
    const m = /^\| `([\w.]+)` +\| `([^`]+)` +\|/.exec(line);
    // These depend on the machine, or are what the bare section sets.
    if (!m || ["cacheDir", "storage.replicaId", "storage.kind"].includes(m[1]!)) continue;
    // deno-lint-ignore no-explicit-any
    const actual = m[1]!.split(".").reduce((o: any, part) => o?.[part], shown);
    if (actual === undefined || typeof actual === "object") continue;
    checked.push(m[1]!);
    if (!same(m[2]!, actual)) wrong.push(`${m[1]}: README ${m[2]}, config check ${actual}`);
  }
  assert(
    checked.includes("limits.idleTimeout") && checked.includes("storage.leaseTtl"),
    checked.join(),
  );
  assertEquals(wrong, []);
});
