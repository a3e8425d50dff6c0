/**
 * Lock file parsing and command-line provider addresses.
 */
import { newestRelease } from "../lib/commands/warm.ts";
import { assertEquals, assertThrows } from "../lib/deps/assert.ts";
import { LockFileError, parseLockFile } from "../lib/protocol/lockfile.ts";
import {
  ArgumentError,
  parsePlatform,
  parseProviderAddress,
} from "../lib/protocol/provider_address.ts";

const H = "registry.terraform.io";

// As terraform init writes it (Terraform 1.11), plus a registry-style entry.
const LOCK = `# This file is maintained automatically by "terraform init".
# Manual edits may be lost in future updates.

provider "registry.terraform.io/example/alpha" {
  version     = "1.1.0"
  constraints = "1.1.0"
  hashes = [
    "h1:XfUMjKlX0gHdOCcZkZhRLKMS9eVrV9fSkrk+3VK1Q48=",
  ]
}

provider "registry.opentofu.org/hashicorp/random" {
  version     = "3.6.0"
  constraints = ">= 3.0.0, < 4.0.0" // trailing comment
  /* a block
     comment */
  hashes = ["h1:abc=", "zh:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"]
}
`;

Deno.test("parseLockFile reads provider blocks as terraform writes them", () => {
  const got = parseLockFile(LOCK, "x.hcl", H);
  assertEquals(got, [
    {
      provider: { hostname: H, namespace: "example", type: "alpha" },
      version: "1.1.0",
      address: "registry.terraform.io/example/alpha",
      constraints: "1.1.0",
      hashes: ["h1:XfUMjKlX0gHdOCcZkZhRLKMS9eVrV9fSkrk+3VK1Q48="],
      line: 4,
    },
    {
      provider: { hostname: "registry.opentofu.org", namespace: "hashicorp", type: "random" },
      version: "3.6.0",
      address: "registry.opentofu.org/hashicorp/random",
      constraints: ">= 3.0.0, < 4.0.0",
      hashes: ["h1:abc=", "zh:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"],
      line: 12,
    },
  ]);
  assertEquals(parseLockFile("", "empty.hcl", H), []);
  // Escapes, and other block types are not ours to judge.
  assertEquals(
    parseLockFile(
      `future "x" { a = 1 }\nprovider "example/t" {\n version = "1.0.0"\n hashes = ["h1:\\u0041\\"$\${x}"]\n}\n`,
      "e.hcl",
      H,
    ).map((p) => [p.provider.hostname, p.hashes]),
    [[H, ['h1:A"${x}']]],
  );
});

Deno.test("parseLockFile names the file and line of what it cannot read", () => {
  const cases: Array<[string, RegExp]> = [
    [
      `provider "a/b" {\n  constraints = "1"\n}`,
      /^f\.hcl:1: provider "registry\.terraform\.io\/a\/b" has no version$/,
    ],
    [`provider "a/b" {\n  version = "1.0"\n}`, /^f\.hcl:2: .*"1\.0" is not a version/],
    [`provider "a/b" {\n  version = "1.0.0"\n`, /^f\.hcl:3: expected "}", found end of file/],
    [`provider "a/b" {\n  version = "1.0.0\n}`, /^f\.hcl:2: unterminated string/],
    [
      `provider "a/b" {\n  version = "\${var.v}"\n}`,
      /^f\.hcl:2: template sequences are not supported/,
    ],
    [`provider "a/b" {\n  version = var.v\n}`, /^f\.hcl:2: expressions are not supported/],
    [
      `provider "a/b" { version = "1.0.0" }\nprovider "A/B" { version = "1.0.0" }`,
      /^f\.hcl:2: provider "registry\.terraform\.io\/a\/b" is listed twice/,
    ],
    [`provider "../../etc" { version = "1.0.0" }`, /^f\.hcl:1: .*not a valid/],
    [`provider { version = "1.0.0" }`, /^f\.hcl:1: a provider block needs exactly one label/],
    [
      `provider "a/b" {\n  hashes = "h1:x"\n  version = "1.0.0"\n}`,
      /^f\.hcl:2: "hashes" must be a list of strings/,
    ],
  ];
  for (const [text, re] of cases) {
    assertThrows(
      () => parseLockFile(text, "f.hcl", H),
      (e: unknown) => {
        if (!(e instanceof LockFileError)) return false;
        if (!re.test(e.message)) throw new Error(`${JSON.stringify(text)}: got "${e.message}"`);
        return true;
      },
    );
  }
});

Deno.test("parseProviderAddress, parsePlatform and newestRelease", () => {
  assertEquals(parseProviderAddress("hashicorp/aws@5.31.0", H), {
    provider: { hostname: H, namespace: "hashicorp", type: "aws" },
    version: "5.31.0",
  });
  assertEquals(parseProviderAddress("Registry.OpenTofu.org/Hashicorp/Random", H), {
    provider: { hostname: "registry.opentofu.org", namespace: "hashicorp", type: "random" },
  });
  for (
    const bad of [
      "aws",
      "a/b/c/d",
      "hashicorp/aws@latest",
      "hashicorp/aws@v1.0.0",
      "../x/y",
      "a b/c",
    ]
  ) {
    assertThrows(() => parseProviderAddress(bad, H), ArgumentError, bad);
  }
  assertEquals(parsePlatform("darwin_arm64"), { os: "darwin", arch: "arm64" });
  assertThrows(() => parsePlatform("linux"), ArgumentError);
  assertThrows(() => parsePlatform("linux_amd64_v2"), ArgumentError);
  assertEquals(newestRelease(["1.2.0", "1.10.0", "2.0.0-beta1", "1.9.9"]), "1.10.0");
  assertEquals(newestRelease(["2.0.0-rc1"]), undefined);
});
