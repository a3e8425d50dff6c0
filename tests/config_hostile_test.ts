/**
 * Red team of configuration: secrets a bad value could carry into
 * `repoxy config check`'s messages, and hostile shapes of the file.
 */
import { configCommand } from "../lib/commands/config.ts";
import { assert, assertEquals } from "../lib/deps/assert.ts";
import { fromFileUrl, join } from "../lib/deps/path.ts";
import { captureIo, testContext, writeConfig } from "./_cli.ts";
import { spawnRepoxy } from "./_process.ts";
import { tempDir } from "./_helpers.ts";

Deno.test("config check: a bad URL's userinfo and query never reach the messages (publicUrl, upstream url)", async () => {
  await using dir = await tempDir();
  const path = await writeConfig(dir.path, {
    publicUrl: "ftp://ci:hunter2-secret@mirror.example/?token=query-secret",
    upstreams: {
      "a.example": { url: "gopher://u:pw-secret-1@a.example/" },
      "b.example": { url: "http://u:pw-secret-2@[not-a-host/x?sig=qs-secret-3" },
    },
  });
  const io = captureIo();
  assertEquals(await configCommand.run(["check", "-c", path], testContext(io)), 2);
  const all = [...io.outLines, ...io.errLines].join("\n");
  for (const s of ["hunter2-secret", "query-secret", "pw-secret-1", "pw-secret-2", "qs-secret-3"]) {
    assertEquals(all.includes(s), false, `${s} printed:\n${all}`);
  }
  // Still says which key and what is wrong.
  for (const key of ["publicUrl", "upstreams.a.example.url", "upstreams.b.example.url"]) {
    assert(io.errLines.some((l) => l.includes(`"${key}"`)), `${key} named:\n${all}`);
  }
  assert(all.includes("mirror.example"), "the rest of the URL is shown");
});

Deno.test("config check: a JSON typo next to a literal secret does not print part of it (V8 quotes the text)", async () => {
  await using dir = await tempDir();
  const path = `${dir.path}/repoxy.json`;
  await Deno.writeTextFile(
    path,
    `{\n  "listen": "127.0.0.1:8080",\n  "auth": {\n    "urlKey": supersecretkeyvalue-0123456789abcdef\n  }\n}\n`,
  );
  const io = captureIo();
  assertEquals(await configCommand.run(["check", "-c", path], testContext(io)), 2);
  const all = [...io.outLines, ...io.errLines].join("\n");
  assertEquals(/supersecr|0123456789/.test(all), false, all);
  assert(all.includes("not valid JSON"), all);
  assert(all.includes("line 4"), `the line is named:\n${all}`);
});

Deno.test("the real server says at start which REPOXY_* variables set what, and warns when one turned allowPrivateNetworks on", async () => {
  await using dir = await tempDir();
  const root = fromFileUrl(new URL("..", import.meta.url));
  const file = join(dir.path, "repoxy.json");
  await Deno.writeTextFile(file, JSON.stringify({ cacheDir: join(dir.path, "cache") }));
  await using p = await spawnRepoxy(Deno.execPath(), [
    ...["run", "-q", "--frozen", "--config", join(root, "deno.json"), "-P=serve"],
    join(root, "main.ts"),
    "serve",
    "--config",
    file,
    "--listen",
    "127.0.0.1:0",
  ], {
    cwd: dir.path,
    env: { REPOXY_ALLOW_PRIVATE_NETWORKS: "true", REPOXY_LOG_FORMAT: "json" },
  });
  const records = [...p.stdout, ...p.stderr].filter((l) => l.startsWith("{")).map((l) =>
    JSON.parse(l)
  );
  const started = records.find((r) => r.msg === "repoxy started");
  assertEquals(
    started?.environment,
    "REPOXY_LOG_FORMAT (logFormat), REPOXY_ALLOW_PRIVATE_NETWORKS (allowPrivateNetworks)",
  );
  const warn = records.find((r) => r.level === "warn" && /allowPrivateNetworks is on/.test(r.msg));
  assertEquals(warn?.setBy, "REPOXY_ALLOW_PRIVATE_NETWORKS", JSON.stringify(records));
});
