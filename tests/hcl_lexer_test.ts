/**
 * The HCL lexer shared by the lock file and `*.tf` readers: escapes, comments,
 * line numbers, and the two ways of treating templates and heredocs.
 */
import { assertEquals, assertThrows } from "../lib/deps/assert.ts";
import { LockFileError, parseLockFile } from "../lib/protocol/lockfile.ts";
import { type HclLexOptions, type HclToken, lexHcl } from "../lib/protocol/hcl_lexer.ts";

const STRICT: HclLexOptions = {
  templates: { refuse: "no templates here" },
  heredocs: { refuse: "no heredocs here" },
  strict: true,
};
const SKIM: HclLexOptions = { templates: "skip", heredocs: "skip", strict: false };

class LexError extends Error {}
const fail = (line: number, msg: string): never => {
  throw new LexError(`${line}: ${msg}`);
};
const lex = (text: string, options = STRICT) => lexHcl(text, options, fail);
/** The tokens as `kind:value@line`, newlines left out. */
const brief = (toks: HclToken[]) =>
  toks.filter((t) => t.kind !== "nl").map((t) => `${t.kind}:${t.value}@${t.line}`);
const refused = (text: string, message: string, options = STRICT) =>
  assertThrows(() => lex(text, options), LexError, message);

Deno.test("hcl lexer: string escapes and escaped template openers", () => {
  const [t] = lex(String.raw`"a\n\r\t\"\\\u00e9\U0001F600 ` + '$${x} %%{y}"');
  assertEquals(t, { kind: "string", value: 'a\n\r\t"\\é😀 ${x} %{y}', line: 1 });
  refused(String.raw`"\x"`, String.raw`1: unknown escape "\x"`);
  refused(String.raw`"\u12"`, "1: bad \\u escape");
  refused(String.raw`"\U0001F60"`, "1: bad \\u escape");
});

Deno.test("hcl lexer: comments, a byte order mark, and line numbers", () => {
  const text = '\ufeffa # one\nb // two\n/* three\nfour\n*/ c = "d"\n\n  e\n';
  assertEquals(brief(lex(text)), [
    "ident:a@1",
    "ident:b@2",
    "ident:c@5",
    "punct:=@5",
    "string:d@5",
    "ident:e@7",
    "eof:@8",
  ]);
  // Newline tokens carry the line they end.
  assertEquals(lex("a\nb").map((t) => `${t.kind}@${t.line}`), [
    "ident@1",
    "nl@1",
    "ident@2",
    "eof@2",
  ]);
});

Deno.test("hcl lexer: numbers and strays, strict or not", () => {
  assertEquals(brief(lex("x = 1.5e3\n")), ["ident:x@1", "punct:=@1", "number:1.5e3@1", "eof:@2"]);
  assertEquals(brief(lex("x = 12 - y", SKIM)), [
    "ident:x@1",
    "punct:=@1",
    "other:1@1",
    "other:2@1",
    "other:-@1",
    "ident:y@1",
    "eof:@1",
  ]);
  refused("x = 1\ny = -1", '2: unexpected character "-"');
});

Deno.test("hcl lexer: templates and heredocs are refused with the caller's message", () => {
  refused('x = 1\ny = "a${b}"', "2: no templates here");
  refused('y = "%{ if a }"', "1: no templates here");
  refused("x = <<EOT\nhi\nEOT\n", "1: no heredocs here");
  refused("x = << 1", "1: no heredocs here");
});

Deno.test("hcl lexer: templates and heredocs are skipped and marked", () => {
  const text = 'a = "x${f("}", {\n})}y"\nb = <<-EOT\n  "not a string\n  EOT\nc = "z"\n';
  assertEquals(brief(lex(text, SKIM)), [
    "ident:a@1",
    "punct:=@1",
    "template:xy@1",
    "ident:b@3",
    "punct:=@3",
    "template:@3",
    "ident:c@6",
    "punct:=@6",
    "string:z@6",
    "eof:@7",
  ]);
  // A `<` that starts no heredoc is just a character.
  assertEquals(brief(lex("a < b", SKIM)), ["ident:a@1", "other:<@1", "ident:b@1", "eof:@1"]);
  refused('a = "${ b', "1: unterminated template", SKIM);
  refused("a = <<EOT\nb\n", "3: heredoc from line 1 is not terminated", SKIM);
  refused("a = <<EOT b\n", "1: malformed heredoc", SKIM);
});

Deno.test("hcl lexer: unterminated strings and comments", () => {
  refused('x = 1\ny = "abc\n"', "2: unterminated string");
  refused('y = "abc', "1: unterminated string");
  refused("x = 1\n/* a\nb", "2: unterminated /* comment");
  // Inside a skipped template the line has moved on by the time the string ends.
  refused('a = "${\n}', "2: unterminated string", SKIM);
});

Deno.test("hcl lexer: a lock file refuses templates and heredocs with its own messages", () => {
  const at = (text: string, message: string) =>
    assertThrows(
      () => parseLockFile(text, "f.hcl", "registry.terraform.io"),
      LockFileError,
      message,
    );
  at(
    'provider "a/b" {\n  version = "${v}"\n}',
    "f.hcl:2: template sequences are not supported in lock files",
  );
  at(
    'provider "a/b" {\n  version = <<EOT\n1.0.0\nEOT\n}',
    "f.hcl:2: heredoc strings are not supported in lock files",
  );
});
