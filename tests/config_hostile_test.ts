/**
 * Red team of configuration: secrets a bad value could carry into
 * `repoxy config check`'s messages, and hostile shapes of the file.
 */
import { configCommand } from "../lib/commands/config.ts";
import { assert, assertEquals } from "../lib/deps/assert.ts";
import { captureIo, testContext, writeConfig } from "./_cli.ts";
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
