/**
 * `repoxy config check`: the effective configuration (defaults filled,
 * overrides applied) with every secret redacted, exit 0; every problem by key
 * path, exit 2. In-process for the output, spawned for the real environment.
 */
import { configCommand } from "../lib/commands/config.ts";
import { defaultReplicaId } from "../lib/config/storage_config.ts";
import { createHash } from "../lib/deps/crypto.ts";
import { join } from "../lib/deps/path.ts";
import { assert, assertEquals, assertMatch } from "../lib/deps/assert.ts";
import { captureIo, runCli, testContext, writeConfig } from "./_cli.ts";
import { tempDir } from "./_helpers.ts";

const UPSTREAM_TOKEN = "upstream-secret-from-file-7f3a";
const LITERAL_TOKEN = "literal-client-token-9b1c2d3e";
const ENV_TOKEN = "env-token-c0ffee-4242";
const URL_KEY = "u".repeat(20) + "url-signing-key-5e6f";

async function secretConfig(dir: string): Promise<string> {
  await Deno.writeTextFile(join(dir, "up.token"), UPSTREAM_TOKEN + "\n");
  await Deno.writeTextFile(join(dir, "url.key"), URL_KEY);
  return await writeConfig(dir, {
    $schema: "./repoxy.schema.json",
    cacheDir: "cache",
    upstreams: { "tfe.example.com": { token: "file:up.token" } },
    auth: {
      tokens: [{ name: "ci", token: LITERAL_TOKEN }],
      urlKey: "file:url.key",
    },
    limits: { archiveSize: "1GiB" },
  });
}

Deno.test("config check prints the effective config with defaults, secrets redacted, exit 0", async () => {
  await using dir = await tempDir();
  const path = await secretConfig(dir.path);
  const io = captureIo();
  const code = await configCommand.run(["check", "--config", path], testContext(io));
  assertEquals(code, 0, io.errLines.join("\n"));
  const all = io.outLines.join("\n") + io.errLines.join("\n");
  for (const secret of [UPSTREAM_TOKEN, LITERAL_TOKEN, URL_KEY]) {
    assertEquals(all.includes(secret), false, "a secret was printed");
  }
  const hash = createHash("sha256").update(LITERAL_TOKEN).digest("hex");
  assertEquals(all.includes(hash), false, "a token's hash was printed");
  const shown = JSON.parse(io.outLines.join("\n"));
  assertEquals(shown.upstreams["tfe.example.com"].token, "<redacted>");
  assertEquals(shown.auth.urlKey, "<redacted>");
  assertEquals(shown.auth.tokens, [{ name: "ci", sha256: "<redacted>" }]);
  // Defaults filled, in the file's own key names and units; paths absolute.
  assertEquals(shown.listen, "127.0.0.1:8080");
  assertEquals(shown.cacheDir, join(dir.path, "cache"));
  assertEquals(shown.metadataTtl, "30s");
  assertEquals(shown.upstreamTimeout, "8s");
  assertEquals(shown.limits.archiveSize, 2 ** 30);
  assertEquals(shown.limits.metadataDocument, 8 * 2 ** 20);
  assertEquals(shown.limits.headerTimeout, "10s");
  assertEquals(shown.auth.urlTtl, "1h");
  assertEquals(shown.backgroundVerify, { rate: 4 * 2 ** 20, interval: "24h" });
  assertEquals(shown.egressAllow, []);
  assertMatch(io.errLines.at(-1)!, /^repoxy config check: valid \(.*repoxy\.json\)$/);
});

Deno.test("config check lists every problem by key path and exits 2", async () => {
  await using dir = await tempDir();
  const path = await writeConfig(dir.path, {
    listen: 8080,
    metadataTtl: "soon",
    limits: { archiveSize: "big", nope: 1 },
    upstreams: { "a.example": { url: "ftp://a.example" } },
  });
  const io = captureIo();
  assertEquals(await configCommand.run(["check", "-c", path], testContext(io)), 2);
  assertEquals(io.outLines, [], "nothing on stdout for an invalid config");
  const want = [
    `"listen" must be a string`,
    `"upstreams.a.example.url" must be an http or https URL`,
    `"metadataTtl" must be a duration`,
    `"limits.archiveSize" must be a size`,
    `unknown key "limits.nope"`,
  ];
  for (const w of want) {
    assert(
      io.errLines.some((l) => l.startsWith(`repoxy config check: ${path}: ${w}`)),
      `${w} in:\n${io.errLines.join("\n")}`,
    );
  }
  assertEquals(
    io.errLines.at(-1),
    "repoxy config check: 5 problem(s); the configuration is invalid",
  );
  // Secrets that cannot be read are problems too, after the schema passes.
  const p2 = await writeConfig(dir.path, {
    upstreams: { "a.example": { token: "env:REPOXY_TEST_UNSET_TOKEN" } },
    auth: { tokens: [{ name: "x", token: "short" }, { name: "x", sha256: "ab".repeat(32) }] },
  });
  const io2 = captureIo();
  assertEquals(await configCommand.run(["check", "-c", p2], testContext(io2)), 2);
  assertEquals(io2.errLines.map((l) => l.replace(`repoxy config check: ${p2}: `, "")), [
    `"upstreams.a.example.token" names environment variable REPOXY_TEST_UNSET_TOKEN, which is not set`,
    `"auth.tokens[0].token" must be at least 16 printable ASCII characters`,
    `"auth.tokens[1].name": "x" is used twice`,
    "repoxy config check: 3 problem(s); the configuration is invalid",
  ]);
});

const VIA_TOKEN = "central-token-from-file-3c4d";
const S3_KEY_ID = "AKIALITERALKEYID0042";
const S3_SECRET = "s3-secret-from-file-8e9f";
const S3_SESSION = "s3-session-from-env-a1b2";

Deno.test("config check redacts via.token and every storage credential, literal, env: or file:", async () => {
  await using dir = await tempDir();
  await Deno.writeTextFile(join(dir.path, "central.token"), VIA_TOKEN + "\n");
  await Deno.writeTextFile(join(dir.path, "s3.secret"), S3_SECRET);
  const path = await writeConfig(dir.path, {
    cacheDir: "cache",
    via: { url: "https://central.corp:8443/", token: "file:central.token" },
    upstreams: { "registry.terraform.io": {} },
    storage: {
      kind: "s3",
      endpoint: "http://rgw.corp:7480/",
      bucket: "mirror-bucket",
      prefix: "eu/prod",
      leaseTtl: "20s",
      credentials: {
        accessKeyId: S3_KEY_ID,
        secretAccessKey: "file:s3.secret",
        sessionToken: "env:REPOXY_TEST_S3_SESSION",
      },
    },
  });
  Deno.env.set("REPOXY_TEST_S3_SESSION", S3_SESSION);
  const io = captureIo();
  try {
    assertEquals(await configCommand.run(["check", "-c", path], testContext(io)), 0);
  } finally {
    Deno.env.delete("REPOXY_TEST_S3_SESSION");
  }
  const all = io.outLines.join("\n") + io.errLines.join("\n");
  for (const secret of [VIA_TOKEN, S3_KEY_ID, S3_SECRET, S3_SESSION]) {
    assertEquals(all.includes(secret), false, `a secret was printed: ${secret}`);
  }
  const shown = JSON.parse(io.outLines.join("\n"));
  assertEquals(shown.via, { url: "https://central.corp:8443/", token: "<redacted>" });
  // The upstream reached through the central carries the central's token: redacted there too.
  assertEquals(shown.upstreams["registry.terraform.io"], {
    url: "https://central.corp:8443/registry.terraform.io",
    token: "<redacted>",
    trustedKeys: [],
  });
  assertEquals(shown.storage, {
    kind: "s3",
    endpoint: "http://rgw.corp:7480",
    bucket: "mirror-bucket",
    prefix: "eu/prod",
    region: "us-east-1",
    pathStyle: true,
    redirect: false,
    redirectTtl: "5m",
    multipartThreshold: 64 * 2 ** 20,
    partSize: 16 * 2 ** 20,
    abandonedUploadAge: "24h",
    timeout: "10s",
    leaseTtl: "20s",
    leaseWait: "30s",
    // Not set in the file: this process's default, `<hostname>-<pid>`.
    replicaId: defaultReplicaId(),
    credentials: {
      accessKeyId: "<redacted>",
      secretAccessKey: "<redacted>",
      sessionToken: "<redacted>",
    },
  });
  // No token, no credentials: nothing to redact, and no placeholder that suggests one.
  const plain = await writeConfig(dir.path, {
    via: "https://central.corp/",
    storage: { kind: "s3", endpoint: "http://rgw.corp:7480", bucket: "mirror-bucket" },
  });
  const io2 = captureIo();
  assertEquals(await configCommand.run(["check", "-c", plain], testContext(io2)), 0);
  const shown2 = JSON.parse(io2.outLines.join("\n"));
  assertEquals(shown2.via, { url: "https://central.corp/" });
  assertEquals(shown2.storage.credentials, undefined);
});

Deno.test("config check lists via and storage problems, cross-key rules included, by key path", async () => {
  await using dir = await tempDir();
  const path = await writeConfig(dir.path, {
    publicUrl: "https://central.corp/",
    via: "https://central.corp",
    upstreams: { "registry.terraform.io": { token: "abc" } },
    storage: {
      kind: "s3",
      endpoint: "http://rgw.corp",
      bucket: "mirror-bucket",
      partSize: "32MiB",
      multipartThreshold: "16MiB",
      credentials: { accessKeyId: "env:REPOXY_TEST_UNSET_ID", secretAccessKey: "x" },
    },
  });
  const io = captureIo();
  assertEquals(await configCommand.run(["check", "-c", path], testContext(io)), 2);
  assertEquals(io.errLines.map((l) => l.replace(`repoxy config check: ${path}: `, "")), [
    `"via" is this instance's own publicUrl; only an edge names its central`,
    `"upstreams.registry.terraform.io.token": with "via", this registry is reached through ` +
    `https://central.corp/, which holds the registry's own token; give the central's token as ` +
    `"via.token" (or set "upstreams.registry.terraform.io.url" to reach the registry directly)`,
    `"storage.multipartThreshold" must be at least "storage.partSize" (33554432 bytes)`,
    `"storage.credentials.accessKeyId" names environment variable REPOXY_TEST_UNSET_ID, which is not set`,
    "repoxy config check: 4 problem(s); the configuration is invalid",
  ]);
});

Deno.test("config check usage: the subcommand is required, --help exits 0", async () => {
  const io = captureIo();
  assertEquals(await configCommand.run([], testContext(io)), 2);
  assertEquals(await configCommand.run(["show"], testContext(io)), 2);
  const help = captureIo();
  assertEquals(await configCommand.run(["--help"], testContext(help)), 0);
  assertMatch(help.outLines.join("\n"), /REPOXY_LISTEN +listen/);
});

Deno.test("real process: REPOXY_* variables show in the effective config; a bad one exits 2 naming it", async () => {
  await using dir = await tempDir();
  const path = await secretConfig(dir.path);
  const raw = JSON.parse(await Deno.readTextFile(path));
  raw.upstreams["b.example"] = { token: "env:REPOXY_TEST_B_TOKEN" };
  await Deno.writeTextFile(path, JSON.stringify(raw));
  const ok = await runCli(["config", "check", "-c", path], {
    env: {
      REPOXY_LISTEN: "0.0.0.0:9999",
      REPOXY_LOG_FORMAT: "json",
      REPOXY_METADATA_TTL: "",
      REPOXY_PUBLIC_URL: `https://user:${ENV_TOKEN}@mirror.example/?sig=${ENV_TOKEN}`,
      REPOXY_TEST_B_TOKEN: ENV_TOKEN,
    },
  });
  assertEquals(ok.code, 0, ok.stderr);
  const shown = JSON.parse(ok.stdout);
  assertEquals([shown.listen, shown.logFormat, shown.metadataTtl], ["0.0.0.0:9999", "json", "30s"]);
  assertEquals(shown.upstreams["b.example"].token, "<redacted>");
  assertEquals(shown.publicUrl, "https://mirror.example/?REDACTED");
  assertMatch(
    ok.stderr,
    /from the environment: REPOXY_LISTEN \(listen\), REPOXY_PUBLIC_URL \(publicUrl\), REPOXY_LOG_FORMAT \(logFormat\)\)$/m,
  );
  for (const secret of [UPSTREAM_TOKEN, LITERAL_TOKEN, URL_KEY, ENV_TOKEN]) {
    assertEquals((ok.stdout + ok.stderr).includes(secret), false);
  }
  // serve reads the same variables: a bad one stops it before it listens.
  const bad = await runCli(["serve", "-c", path], {
    env: { REPOXY_METADATA_TTL: "soon" },
    timeoutMs: 20_000,
  });
  assertEquals(bad.code, 2, bad.stderr);
  assertMatch(bad.stderr, /"REPOXY_METADATA_TTL" must be a duration/);
});
