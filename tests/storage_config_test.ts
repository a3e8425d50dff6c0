/**
 * The `storage` config section and the S3 credential chain (no bucket
 * needed): defaults, strict keys, `env:`/`file:` credentials, and the chain's
 * order (environment, shared file, container endpoint, instance metadata).
 * @module
 */
import { buildConfig, type ConfigEnv, ConfigError } from "../lib/config/config.ts";
import { defaultReplicaId } from "../lib/config/storage_config.ts";
import { effectiveConfig } from "../lib/config/effective.ts";
import { assert, assertEquals, assertMatch, assertRejects } from "../lib/deps/assert.ts";
import { awsCredentialChain, type ChainEnv } from "../lib/storage_s3/credentials.ts";

function env(vars: Record<string, string>, files: Record<string, string> = {}): ConfigEnv {
  return {
    getEnv: (n) => vars[n],
    readTextFile: (p) =>
      p in files ? Promise.resolve(files[p]!) : Promise.reject(new Deno.errors.NotFound(p)),
    cwd: () => "/work",
  };
}

const BASE = { kind: "s3", endpoint: "http://127.0.0.1:7480/", bucket: "mirror-bucket" };

Deno.test("storage: absent or disk means the local disk alone", async () => {
  assertEquals((await buildConfig({}, {}, "/x", env({}))).storage, undefined);
  assertEquals(
    (await buildConfig({ storage: { kind: "disk" } }, {}, "/x", env({}))).storage,
    undefined,
  );
});

Deno.test("storage: s3 defaults and env:/file: credentials", async () => {
  const c = await buildConfig(
    {
      storage: {
        ...BASE,
        prefix: "eu/prod",
        credentials: { accessKeyId: "env:REPOXY_S3_ID", secretAccessKey: "file:secret.txt" },
      },
    },
    {},
    "/etc/repoxy",
    env({ REPOXY_S3_ID: "AKIA1" }, { "/etc/repoxy/secret.txt": "s3cr3t\n" }),
  );
  assertEquals(c.storage, {
    kind: "s3",
    endpoint: "http://127.0.0.1:7480",
    bucket: "mirror-bucket",
    prefix: "eu/prod",
    region: "us-east-1",
    pathStyle: true,
    redirect: false,
    redirectTtlMs: 300_000,
    multipartThresholdBytes: 64 * 2 ** 20,
    partSizeBytes: 16 * 2 ** 20,
    abandonedUploadAgeMs: 86_400_000,
    timeoutMs: 10_000,
    leaseTtlMs: 15_000,
    leaseWaitMs: 30_000,
    replicaId: defaultReplicaId(),
    credentials: { accessKeyId: "AKIA1", secretAccessKey: "s3cr3t" },
  });
});

Deno.test("storage: mistakes name the key", async () => {
  const bad: Array<[unknown, RegExp]> = [
    [{ ...BASE, kind: "gcs" }, /storage\.kind/],
    [{ ...BASE, endpoint: "ftp://x" }, /storage\.endpoint/],
    [{ ...BASE, bucket: "Bad_Name" }, /storage\.bucket/],
    [{ ...BASE, prefix: "/lead" }, /storage\.prefix/],
    [{ ...BASE, leaseTtl: "1s" }, /storage\.leaseTtl/],
    [{ ...BASE, prefix: "a/../b" }, /storage\.prefix/],
    [{ ...BASE, partSize: "1MiB" }, /storage\.partSize/],
    [{ ...BASE, redirect: "yes" }, /storage\.redirect/],
    [{ ...BASE, extra: 1 }, /storage\.extra/],
    [{ ...BASE, credentials: { accessKeyId: "env:NOPE", secretAccessKey: "x" } }, /NOPE/],
    [{ kind: "disk", bucket: "x" }, /kind "disk"/],
    ["s3", /"storage" must be an object such as/],
    [{ bucket: "mirror-bucket" }, /unknown key "storage\.bucket" \(storage with kind "disk"/],
    [{ kind: "s3", bucket: "mirror-bucket" }, /"storage\.endpoint" is required/],
    [{ ...BASE, multipartThreshold: "8MiB" }, /"storage\.multipartThreshold" must be at least/],
    [{ ...BASE, partSize: "32MiB", multipartThreshold: "16MiB" }, /storage\.multipartThreshold/],
    [{ ...BASE, redirectTtl: "200h" }, /"storage\.redirectTtl" must be at most 7 days/],
    [{ ...BASE, timeout: 0 }, /"storage\.timeout" must be at least/],
    [{ ...BASE, leaseWait: "soon" }, /"storage\.leaseWait" must be a duration/],
    [{ ...BASE, endpoint: "http://u:p@rgw" }, /"storage\.endpoint" must not carry credentials/],
    [{ ...BASE, credentials: { accessKeyId: "", secretAccessKey: "x" } }, /accessKeyId/],
    [{ ...BASE, credentials: { accessKeyId: "a" } }, /"storage\.credentials\.secretAccessKey"/],
  ];
  for (const [storage, msg] of bad) {
    await assertRejects(() => buildConfig({ storage }, {}, "/x", env({})), ConfigError, undefined);
    const e = await buildConfig({ storage }, {}, "/x", env({})).catch((e) => e as Error);
    assertEquals(
      msg.test((e as Error).message),
      true,
      `${JSON.stringify(storage)}: ${(e as Error).message}`,
    );
  }
});

function chainEnv(vars: Record<string, string>, files: Record<string, string>, fetched: string[]) {
  let now = 1_000_000;
  const e: ChainEnv & { advance(ms: number): void } = {
    getEnv: (n) => vars[n],
    readTextFile: (p) =>
      p in files ? Promise.resolve(files[p]!) : Promise.reject(new Deno.errors.NotFound(p)),
    fetch: (input, init) => {
      const url = String(input);
      fetched.push(`${init?.method ?? "GET"} ${url}`);
      if (url.endsWith("/latest/api/token")) return Promise.resolve(new Response("tok"));
      if (url.endsWith("/security-credentials/")) return Promise.resolve(new Response("role-a\n"));
      if (url.endsWith("/security-credentials/role-a") || url.startsWith("http://169.254.170.2")) {
        return Promise.resolve(Response.json({
          AccessKeyId: "TEMP",
          SecretAccessKey: "TEMPSECRET",
          Token: `session-${fetched.length}`,
          Expiration: new Date(now + 3_600_000).toISOString(),
        }));
      }
      return Promise.reject(new TypeError("unreachable"));
    },
    now: () => now,
    advance: (ms) => now += ms,
  };
  return e;
}

Deno.test("credential chain: environment first, then the shared file's profile", async () => {
  const fetched: string[] = [];
  const fromEnv = await awsCredentialChain(chainEnv({
    AWS_ACCESS_KEY_ID: "ENVID",
    AWS_SECRET_ACCESS_KEY: "ENVSECRET",
    HOME: "/home/u",
  }, {
    "/home/u/.aws/credentials":
      "[default]\naws_access_key_id = FILEID\naws_secret_access_key = F\n",
  }, fetched))();
  assertEquals(fromEnv, { accessKeyId: "ENVID", secretAccessKey: "ENVSECRET" });
  const fromFile = await awsCredentialChain(chainEnv({ HOME: "/home/u", AWS_PROFILE: "ci" }, {
    "/home/u/.aws/credentials":
      "[default]\naws_access_key_id = D\naws_secret_access_key = D\n\n[ci]\naws_access_key_id = CIID ; comment\naws_secret_access_key = CISECRET\naws_session_token = T\n",
  }, fetched))();
  assertEquals(fromFile, { accessKeyId: "CIID", secretAccessKey: "CISECRET", sessionToken: "T" });
  assertEquals(fetched, [], "no network when a local source answers");
});

Deno.test("credential chain: container endpoint, then IMDSv2; temporary credentials renewed before expiry", async () => {
  const fetched: string[] = [];
  const container = await awsCredentialChain(chainEnv(
    {
      AWS_CONTAINER_CREDENTIALS_RELATIVE_URI: "/v2/creds",
    },
    {},
    fetched,
  ))();
  assertEquals(container.accessKeyId, "TEMP");
  assertEquals(fetched, ["GET http://169.254.170.2/v2/creds"]);

  fetched.length = 0;
  const e = chainEnv({}, {}, fetched);
  const chain = awsCredentialChain(e);
  const first = await chain();
  assertEquals(first.accessKeyId, "TEMP");
  assertEquals(fetched, [
    "PUT http://169.254.169.254/latest/api/token",
    "GET http://169.254.169.254/latest/meta-data/iam/security-credentials/",
    "GET http://169.254.169.254/latest/meta-data/iam/security-credentials/role-a",
  ]);
  assertEquals(await chain(), first, "held while valid");
  assertEquals(fetched.length, 3);
  e.advance(3_600_000 - 4 * 60_000); // within five minutes of the expiry
  const renewed = await chain();
  assertEquals(fetched.length, 6);
  assertEquals(renewed.sessionToken !== first.sessionToken, true);
});

Deno.test("credential chain: nothing configured says what it tried", async () => {
  const chain = awsCredentialChain(chainEnv({ AWS_EC2_METADATA_DISABLED: "true" }, {}, []));
  await assertRejects(() => chain(), Error, "no S3 credentials found");
});

Deno.test("the S3 code is reached only through dynamic imports (the disk default never loads it)", async () => {
  const lib = new URL("../lib/", import.meta.url).pathname;
  const importers: string[] = [];
  const walk = async (dir: string) => {
    for await (const e of Deno.readDir(dir)) {
      const p = `${dir}/${e.name}`;
      if (e.isDirectory) await walk(p);
      else if (e.name.endsWith(".ts") && !p.includes("/storage_s3/")) {
        const text = await Deno.readTextFile(p);
        const re =
          /(import\s+type\s[^;]*?from|import\s*\(|from)\s*["'][^"']*storage_s3\/[^"']+["']/g;
        for (const m of text.matchAll(re)) {
          // Type-only imports are erased: they load nothing.
          if (!m[1]!.startsWith("import type")) importers.push(`${p.slice(lib.length)}: ${m[0]}`);
        }
      }
    }
  };
  await walk(lib.replace(/\/$/, ""));
  // app.ts for the server; the commands (with the bucket's maintenance) when storage.kind is s3.
  assertEquals(importers.sort(), [
    'app.ts: import("./storage_s3/mod.ts"',
    'commands/command_storage.ts: import("../storage_s3/mod.ts"',
    'commands/export.ts: import("../storage_s3/bucket_maintenance.ts"',
    'commands/prune.ts: import("../storage_s3/bucket_maintenance.ts"',
    'commands/verify.ts: import("../storage_s3/bucket_maintenance.ts"',
  ]);
  const aws = new URL("../lib/deps/aws4fetch.ts", import.meta.url).pathname;
  const users: string[] = [];
  for await (const e of Deno.readDir(lib + "storage_s3")) {
    const text = await Deno.readTextFile(`${lib}storage_s3/${e.name}`);
    if (/deps\/(aws4fetch|node_http)\.ts/.test(text)) users.push(e.name);
  }
  assertEquals(users.sort(), ["s3_client.ts"], `${aws} and node_http.ts only behind the S3 client`);
});

Deno.test("storage.retention and storage.replicaId: parsed, bounded, printed back", async () => {
  const c = await buildConfig(
    {
      storage: { ...BASE, replicaId: "eu-1.a", retention: { maxSize: "500GB", maxAge: "90d" } },
    },
    {},
    "/x",
    env({}),
  );
  assertEquals(c.storage?.replicaId, "eu-1.a");
  assertEquals(c.storage?.retention, { maxBytes: 500e9, maxAgeMs: 90 * 86_400_000 });
  const shown = effectiveConfig(c).storage as Record<string, unknown>;
  assertEquals([shown.replicaId, shown.retention], ["eu-1.a", { maxSize: 500e9, maxAge: "90d" }]);
  const hours = await buildConfig(
    { storage: { ...BASE, retention: { maxAge: "48h" } } },
    {},
    "/x",
    env({}),
  );
  assertEquals(hours.storage?.retention, { maxAgeMs: 48 * 3_600_000 });
  for (
    const [storage, msg] of [
      [{ ...BASE, retention: { maxAge: "2h" } }, /storage\.retention\.maxAge.*at least 1d/],
      [{ ...BASE, retention: { maxAge: "soon" } }, /storage\.retention\.maxAge/],
      [{ ...BASE, retention: { maxSize: "lots" } }, /storage\.retention\.maxSize/],
      [{ ...BASE, retention: { keep: 1 } }, /storage\.retention.*keep/],
      [{ ...BASE, replicaId: "a b" }, /storage\.replicaId/],
    ] as const
  ) {
    const e = await buildConfig({ storage }, {}, "/x", env({})).then(() => undefined, (x) => x);
    assert(e instanceof ConfigError, `${JSON.stringify(storage)} is refused`);
    assertMatch(e.message, msg);
  }
});
