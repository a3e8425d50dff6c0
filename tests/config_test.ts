import {
  buildConfig,
  type ConfigEnv,
  ConfigError,
  loadConfig,
  parseDuration,
  parseListen,
} from "../lib/config/config.ts";
import { assertEquals, assertMatch, assertRejects, assertThrows } from "../lib/deps/assert.ts";

function fakeEnv(files: Record<string, string> = {}, vars: Record<string, string> = {}): ConfigEnv {
  return {
    readTextFile: (p) =>
      p in files ? Promise.resolve(files[p]!) : Promise.reject(new Error("No such file")),
    getEnv: (n) => vars[n],
    cwd: () => "/work",
  };
}

const PEM = "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n";

Deno.test("buildConfig() defaults: loopback, two public upstreams, 30 s version-list freshness", async () => {
  const c = await buildConfig({}, {}, "/work", fakeEnv({}, { HOME: "/home/u" }));
  assertEquals(c.listen, { hostname: "127.0.0.1", port: 8080 });
  assertEquals([...c.upstreams.keys()], ["registry.terraform.io", "registry.opentofu.org"]);
  assertEquals(c.upstreams.get("registry.opentofu.org")!.url, "https://registry.opentofu.org");
  assertEquals(c.metadataTtlMs, 30_000);
  assertEquals(c.defaultUpstream, "registry.terraform.io");
  assertEquals(c.offline, false);
  assertEquals(c.tls, undefined);
  assertMatch(c.cacheDir, /^\/home\/u\/(\.cache|Library\/Caches)\/repoxy$/);
  const noHome = await buildConfig({}, {}, "/work", fakeEnv());
  assertEquals(noHome.cacheDir, "/work/repoxy-data");
});

Deno.test("buildConfig() resolves tokens from literals, env: and file:", async () => {
  const env = fakeEnv({ "/etc/repoxy/tok": "from-file\n" }, { TFE_TOKEN: "from-env" });
  const c = await buildConfig(
    {
      upstreams: {
        "a.example": { token: "literal" },
        "b.example": { token: "env:TFE_TOKEN", url: "https://b.internal/registry/" },
        "c.example": { token: "file:tok" },
      },
    },
    {},
    "/etc/repoxy",
    env,
  );
  assertEquals(c.upstreams.get("a.example")!.token, "literal");
  assertEquals(c.upstreams.get("b.example")!.token, "from-env");
  assertEquals(c.upstreams.get("b.example")!.url, "https://b.internal/registry");
  assertEquals(c.upstreams.get("c.example")!.token, "from-file");
  await assertRejects(
    () => buildConfig({ upstreams: { "a.example": { token: "env:MISSING" } } }, {}, "/", env),
    /upstreams\.a\.example\.token.*MISSING/,
  );
});

Deno.test("buildConfig() flags override the file", async () => {
  const c = await buildConfig(
    { listen: "0.0.0.0:9000", cacheDir: "data", offline: false },
    { listen: "[::1]:7000", cacheDir: "/var/cache/x", offline: true },
    "/etc/repoxy",
    fakeEnv(),
  );
  assertEquals(c.listen, { hostname: "::1", port: 7000 });
  assertEquals(c.cacheDir, "/var/cache/x");
  assertEquals(c.offline, true);
  const rel = await buildConfig({ cacheDir: "data" }, {}, "/etc/repoxy", fakeEnv());
  assertEquals(rel.cacheDir, "/etc/repoxy/data");
});

Deno.test("buildConfig() errors name the key", async () => {
  const cases: Array<[unknown, RegExp]> = [
    [{ lisen: "x" }, /unknown key "lisen"/],
    [{ listen: 8080 }, /"listen" must be a string/],
    [{ listen: "localhost" }, /"listen" must be HOST:PORT/],
    [{ listen: "1.2.3.4:99999" }, /"listen" must be HOST:PORT/],
    [{ tls: { cert: "/c.pem" } }, /"tls.cert" and "tls.key" must be set together/],
    [{ tls: { cert: "/c.pem", key: "/k.pem" } }, /"tls.cert": cannot read "\/c.pem"/],
    [{ tls: { crt: "x" } }, /unknown key "tls.crt"/],
    [{ upstreams: [] }, /"upstreams" must be an object/],
    [{ upstreams: { "Bad_Host": {} } }, /not a valid registry hostname/],
    [
      { upstreams: { "a.example": { url: "ftp://x" } } },
      /"upstreams.a.example.url" must be an http or https URL/,
    ],
    [{ upstreams: { "a.example": { uri: "x" } } }, /unknown key "upstreams.a.example.uri"/],
    [{ upstreams: { "a.example": { token: 5 } } }, /"upstreams.a.example.token" must be a string/],
    [{ metadataTtl: "soon" }, /"metadataTtl" must be a duration/],
    [{ offline: "yes" }, /"offline" must be true or false/],
    [
      { defaultUpstream: "x.example" },
      /"defaultUpstream" is "x.example", which is not among "upstreams"/,
    ],
    [{ logFormat: "xml" }, /"logFormat" must be "text" or "json"/],
    [[], /must be a JSON object/],
  ];
  for (const [raw, re] of cases) {
    await assertRejects(() => buildConfig(raw, {}, "/", fakeEnv()), (e: Error) => {
      assertEquals(e instanceof ConfigError, true);
      assertMatch(e.message, re);
      return true;
    });
  }
});

Deno.test("buildConfig() reads TLS PEM files", async () => {
  const env = fakeEnv({ "/t/c.pem": PEM, "/t/k.pem": PEM.replace("CERTIFICATE", "PRIVATE KEY") });
  const c = await buildConfig({ tls: { cert: "c.pem", key: "k.pem" } }, {}, "/t", env);
  assertEquals(c.tls?.cert, "/t/c.pem");
  assertEquals(c.tls?.certPem, PEM);
  const notPem = fakeEnv({ "/t/c.pem": "garbage", "/t/k.pem": PEM });
  await assertRejects(
    () => buildConfig({ tls: { cert: "c.pem", key: "k.pem" } }, {}, "/t", notPem),
    /not a PEM/,
  );
});

Deno.test("loadConfig() reports unreadable and malformed files with their path", async () => {
  await assertRejects(
    () => loadConfig("missing.json", {}, fakeEnv()),
    /cannot read config file "\/work\/missing.json"/,
  );
  await assertRejects(
    () => loadConfig("/c.json", {}, fakeEnv({ "/c.json": "{ nope" })),
    /config file "\/c.json" is not valid JSON/,
  );
  await assertRejects(
    () => loadConfig("/c.json", {}, fakeEnv({ "/c.json": '{"x":1}' })),
    /\/c.json: unknown key "x"/,
  );
  const ok = await loadConfig("/c.json", {}, fakeEnv({ "/c.json": '{"listen":"127.0.0.1:9"}' }));
  assertEquals(ok.listen.port, 9);
});

Deno.test("parseListen() and parseDuration()", () => {
  assertEquals(parseListen("127.0.0.1:0"), { hostname: "127.0.0.1", port: 0 });
  assertEquals(parseListen(":8080"), { hostname: "0.0.0.0", port: 8080 });
  assertEquals(parseListen("[::]:443"), { hostname: "::", port: 443 });
  assertThrows(() => parseListen("[::1]"), ConfigError);
  assertEquals(parseDuration("10m", "k"), 600_000);
  assertEquals(parseDuration("1.5s", "k"), 1500);
  assertEquals(parseDuration(30, "k"), 30_000);
  assertEquals(parseDuration("250ms", "k"), 250);
  assertThrows(() => parseDuration(-1, "k"), ConfigError);
});
