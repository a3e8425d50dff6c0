/**
 * packaging/: the systemd unit and its example config. Static checks always;
 * `systemd-analyze verify` when systemd-analyze is installed.
 */
import { buildConfig, type ConfigEnv } from "../lib/config/config.ts";
import { assert, assertEquals, assertMatch } from "../lib/deps/assert.ts";
import { fromFileUrl, join } from "../lib/deps/path.ts";
import { SHUTDOWN_DRAIN_MS } from "../lib/http/server.ts";
import { tempDir } from "./_helpers.ts";

const ROOT = fromFileUrl(new URL("..", import.meta.url));
const UNIT = join(ROOT, "packaging", "repoxy.service");

/** The unit's [Service] settings: key → every value, comments dropped. */
async function serviceSettings(): Promise<Map<string, string[]>> {
  const out = new Map<string, string[]>();
  let section = "";
  for (const raw of (await Deno.readTextFile(UNIT)).split("\n")) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#") || line.startsWith(";")) continue;
    const sec = /^\[(\w+)\]$/.exec(line);
    if (sec) {
      section = sec[1]!;
      continue;
    }
    const m = /^([A-Za-z]+)=(.*)$/.exec(line);
    if (!m) throw new Error(`unparsable unit line: ${line}`);
    const key = `${section}.${m[1]}`;
    out.set(key, [...(out.get(key) ?? []), m[2]!]);
  }
  return out;
}

Deno.test("repoxy.service is hardened the way V8 tolerates and outlasts the drain deadline", async () => {
  const s = await serviceSettings();
  const one = (k: string) => {
    const v = s.get(`Service.${k}`);
    assert(v && v.length === 1, `Service.${k} must be set once, got ${JSON.stringify(v)}`);
    return v[0]!;
  };
  assertEquals(one("ExecStart"), "/usr/local/bin/repoxy serve --config /etc/repoxy/config.json");
  assertEquals(one("Type"), "exec");
  assertEquals(one("KillSignal"), "SIGTERM");
  for (
    const k of [
      "DynamicUser",
      "NoNewPrivileges",
      "ProtectHome",
      "PrivateTmp",
      "PrivateDevices",
      "ProtectKernelTunables",
      "ProtectKernelModules",
      "ProtectControlGroups",
      "RestrictSUIDSGID",
      "LockPersonality",
      "RestrictNamespaces",
    ]
  ) assertEquals(one(k), "yes", k);
  assertEquals(one("ProtectSystem"), "strict");
  assertEquals(one("StateDirectory"), "repoxy");
  assertEquals(one("CacheDirectory"), "repoxy");
  assertEquals(one("ConfigurationDirectory"), "repoxy");
  assertEquals(one("CapabilityBoundingSet"), "");
  assertEquals(one("Environment"), "DENO_DIR=%C/repoxy/deno");
  // V8's JIT maps writable-then-executable memory: this setting kills it at start.
  assertEquals(s.has("Service.MemoryDenyWriteExecute"), false);
  assertEquals(s.get("Service.SystemCallFilter"), ["@system-service", "@pkey"]);
  const stop = /^(\d+)s$/.exec(one("TimeoutStopSec"));
  assert(stop, "TimeoutStopSec in seconds");
  assert(
    Number(stop[1]) * 1000 >= SHUTDOWN_DRAIN_MS + 10_000,
    `TimeoutStopSec must exceed the ${SHUTDOWN_DRAIN_MS} ms drain with room to clean up`,
  );
  assertEquals(s.get("Install.WantedBy"), ["multi-user.target"]);
  assertEquals(s.get("Unit.After"), ["network-online.target"]);
});

Deno.test("packaging/config.json is valid and matches the unit's directories", async () => {
  const raw = JSON.parse(await Deno.readTextFile(join(ROOT, "packaging", "config.json")));
  const pem = "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n";
  const read: string[] = [];
  const env: ConfigEnv = {
    readTextFile: (p) => {
      read.push(p);
      return Promise.resolve(pem);
    },
    getEnv: () => undefined,
    cwd: () => "/",
  };
  const config = await buildConfig(raw, {}, "/etc/repoxy", env);
  assertEquals(config.cacheDir, "/var/lib/repoxy"); // StateDirectory=repoxy
  assertEquals(read, ["/etc/repoxy/tls.crt", "/etc/repoxy/tls.key"]); // ConfigurationDirectory
  assertEquals(config.logFormat, "json");
  assertMatch(config.publicUrl ?? "", /^https:\/\/.+\/$/);
  assertEquals([...config.upstreams.keys()], ["registry.terraform.io", "registry.opentofu.org"]);
});

Deno.test("systemd-analyze verify accepts repoxy.service without a warning", async () => {
  let available = false;
  try {
    available = (await new Deno.Command("systemd-analyze", {
      args: ["--version"],
      stdout: "null",
      stderr: "null",
    }).output()).success;
  } catch { /* not installed */ }
  if (!available) {
    // deno-lint-ignore no-console
    console.log("SKIP: systemd-analyze is not installed; unit checked statically only");
    return;
  }
  await using dir = await tempDir();
  // verify also checks that ExecStart exists: stand in an executable for the binary.
  const exe = join(dir.path, "repoxy");
  await Deno.writeTextFile(exe, "#!/bin/sh\nexit 0\n");
  await Deno.chmod(exe, 0o755);
  const unit = join(dir.path, "repoxy.service");
  const text = await Deno.readTextFile(UNIT);
  assert(text.includes("ExecStart=/usr/local/bin/repoxy "));
  await Deno.writeTextFile(
    unit,
    text.replace("ExecStart=/usr/local/bin/repoxy ", `ExecStart=${exe} `),
  );
  const out = await new Deno.Command("systemd-analyze", {
    args: ["verify", "--man=no", unit],
    stdout: "piped",
    stderr: "piped",
    env: { SYSTEMD_LOG_COLOR: "0" },
  }).output();
  const stderr = new TextDecoder().decode(out.stderr).trim();
  // Unknown keys and bad values are only warnings (exit 0): treat any output as failure.
  assertEquals(stderr, "", stderr);
  assertEquals(out.code, 0);
});
