/**
 * The JSON Schema file shipped as `repoxy.schema.json`: generated from the
 * schema the loader checks with, so it cannot drift; it accepts the example
 * config and a `$schema` key, and an independent validator (ajv, test only)
 * agrees with the loader on what is a valid file.
 */
import Ajv from "ajv";
import { buildConfig, type ConfigEnv, ConfigError } from "../lib/config/config.ts";
import { renderConfigSchema, SCHEMA_FILE } from "../scripts/config_schema.ts";
import { assert, assertEquals } from "../lib/deps/assert.ts";

const committed = await Deno.readTextFile(SCHEMA_FILE);
const example = JSON.parse(
  await Deno.readTextFile(new URL("../config.example.json", import.meta.url)),
);
// deno-lint-ignore no-explicit-any
const ajv = new (Ajv as any)({ allErrors: true, strict: true });
const validate = ajv.compile(JSON.parse(committed));

const PEM = "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n";
const PGP = "-----BEGIN PGP PUBLIC KEY BLOCK-----\nx\n-----END PGP PUBLIC KEY BLOCK-----\n";
const env: ConfigEnv = {
  readTextFile: (p) => Promise.resolve(p.endsWith(".asc") ? PGP : PEM),
  getEnv: (n) => n.startsWith("REPOXY_") ? "k".repeat(40) : undefined,
  cwd: () => "/",
};

async function loaderAccepts(doc: unknown): Promise<boolean> {
  try {
    await buildConfig(doc, {}, "/etc/repoxy", env);
    return true;
  } catch (e) {
    if (e instanceof ConfigError) return false;
    throw e;
  }
}

Deno.test("repoxy.schema.json is what `deno task schema` generates (no drift)", () => {
  assertEquals(committed, renderConfigSchema(), "run `deno task schema` and commit the file");
  const schema = JSON.parse(committed);
  assertEquals(schema.$schema, "http://json-schema.org/draft-07/schema#");
  assertEquals(schema.additionalProperties, false);
  // Every section of the loader's schema is in the file, typed.
  for (const k of ["listen", "tls", "upstreams", "limits", "auth", "backgroundVerify"]) {
    assert(schema.properties[k]?.type || schema.properties[k]?.anyOf, `schema types ${k}`);
  }
  assertEquals(Object.keys(schema.properties.limits.properties).length, 12);
  // The sections of issue 13: via (a URL or { url, token }) and storage (disk, or an S3 bucket).
  assertEquals(schema.properties.via.anyOf.map((o: { type: string }) => o.type), [
    "string",
    "object",
  ]);
  assertEquals(schema.properties.via.anyOf[1].required, ["url"]);
  const [disk, s3] = schema.properties.storage.oneOf;
  assertEquals(disk.properties.kind, { const: "disk" });
  assertEquals(s3.properties.kind, { const: "s3" });
  assertEquals(s3.required, ["kind", "endpoint", "bucket"]);
  for (const k of ["prefix", "pathStyle", "credentials", "redirect", "leaseTtl", "leaseWait"]) {
    assert(s3.properties[k], `schema types storage.${k}`);
  }
  assertEquals(s3.properties.credentials.required, ["accessKeyId", "secretAccessKey"]);
});

Deno.test("the fleet configs in docs/deploy validate against repoxy.schema.json", async () => {
  for (const name of ["replica.json", "edge.json"]) {
    const url = new URL(`../docs/deploy/config/${name}`, import.meta.url);
    const doc = JSON.parse(await Deno.readTextFile(url));
    assertEquals(validate(doc), true, `${name}: ${JSON.stringify(validate.errors)}`);
  }
});

Deno.test("config.example.json validates against repoxy.schema.json, with its $schema key", async () => {
  const doc = { $schema: "./repoxy.schema.json", ...example };
  assertEquals(validate(doc), true, JSON.stringify(validate.errors));
  assertEquals(validate(example), true, JSON.stringify(validate.errors));
  // The loader takes the same document, $schema and all.
  assertEquals(await loaderAccepts(doc), true);
  assertEquals(await loaderAccepts({ $schema: "./repoxy.schema.json" }), true);
});

Deno.test("the JSON Schema and the loader agree on what a config file may say", async () => {
  const cases: unknown[] = [
    {},
    { listen: "0.0.0.0:8080" },
    { listen: 8080 },
    { lisen: "x" },
    { tls: { crt: "x" } },
    { tls: { http2: "yes" } },
    { metadataTtl: "1.5s" },
    { metadataTtl: 30 },
    { metadataTtl: "soon" },
    { metadataTtl: -1 },
    { maxCacheSize: "2GiB" },
    { maxCacheSize: "50 GB" },
    { maxCacheSize: "big" },
    { maxCacheSize: 1.5 },
    { offline: "yes" },
    { logFormat: "json" },
    { logFormat: "xml" },
    { cacheDir: "" },
    { upstreams: { "a.example": { url: "https://a.example/r", token: "t0k" } } },
    { upstreams: { "a.example": { uri: "x" } } },
    { upstreams: { "a.example": { trustedKeys: "k" } } },
    { upstreams: [] },
    { limits: { minTransferRate: "4KB/s", archiveSize: 1024, maxConnections: 3 } },
    { limits: { nope: 1 } },
    { limits: { maxConnections: 0 } },
    { limits: { maxConnections: 2.5 } },
    { limits: [] },
    { egressAllow: ["10.0.0.0/8"] },
    { egressAllow: "10.0.0.0/8" },
    { egressAllow: [""] },
    { auth: { tokens: [] } },
    { auth: { tokens: [{ name: "ci", sha256: "ab".repeat(32) }], protectOps: false } },
    { auth: { tokens: [{ name: "ci", sha256: "xyz" }] } },
    { auth: { tokens: [{ name: "c i", sha256: "ab".repeat(32) }] } },
    { backgroundVerify: { rate: "1MB/s", interval: "12h" } },
    { backgroundVerify: { rate: "fast" } },
    { via: "https://central.corp:8443/" },
    { via: { url: "https://central.corp/", token: "env:REPOXY_CENTRAL" } },
    { via: { token: "x" } },
    { via: { url: "https://central.corp/", tokn: "x" } },
    { via: 42 },
    { storage: {} },
    { storage: { kind: "disk" } },
    { storage: { kind: "disk", bucket: "b" } },
    { storage: { kind: "gcs" } },
    { storage: { kind: "s3", endpoint: "http://rgw:7480", bucket: "mirror" } },
    {
      storage: {
        kind: "s3",
        endpoint: "https://s3.example",
        bucket: "mirror",
        prefix: "eu/prod",
        pathStyle: false,
        redirect: true,
        redirectTtl: "10m",
        partSize: "8MiB",
        leaseTtl: 5,
        leaseWait: "1m",
        credentials: { accessKeyId: "env:REPOXY_ID", secretAccessKey: "file:s.key" },
      },
    },
    { storage: { kind: "s3", bucket: "mirror" } },
    { storage: { kind: "s3", endpoint: "http://rgw", bucket: "Bad_Name" } },
    { storage: { kind: "s3", endpoint: "http://rgw", bucket: "mirror", prefix: "a/../b" } },
    { storage: { kind: "s3", endpoint: "http://rgw", bucket: "mirror", prefix: "/lead" } },
    { storage: { kind: "s3", endpoint: "http://rgw", bucket: "mirror", redirect: "yes" } },
    { storage: { kind: "s3", endpoint: "http://rgw", bucket: "mirror", credentials: {} } },
    [],
    "listen",
  ];
  const disagree: string[] = [];
  for (const doc of cases) {
    const bySchema = validate(doc) as boolean;
    const byLoader = await loaderAccepts(doc);
    if (bySchema !== byLoader) {
      disagree.push(`${JSON.stringify(doc)}: schema ${bySchema}, loader ${byLoader}`);
    }
  }
  assertEquals(disagree, []);
  // Both sides said no somewhere and yes somewhere: neither is a rubber stamp.
  const verdicts = cases.map((d) => validate(d) as boolean);
  assert(verdicts.includes(true) && verdicts.includes(false));
});
