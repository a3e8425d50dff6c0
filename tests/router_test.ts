import { assertEquals, assertThrows } from "../lib/deps/assert.ts";
import { BadPathError, parseRoute } from "../lib/protocol/paths.ts";

const D = "registry.terraform.io";
const P = { hostname: D, namespace: "hashicorp", type: "aws" };

Deno.test("parseRoute() maps network mirror paths", () => {
  assertEquals(parseRoute(`/${D}/hashicorp/aws/index.json`, D), {
    kind: "mirrorIndex",
    provider: P,
  });
  assertEquals(parseRoute(`/${D}/hashicorp/aws/5.31.0.json`, D), {
    kind: "mirrorVersion",
    provider: P,
    version: "5.31.0",
  });
  assertEquals(parseRoute(`/${D}/hashicorp/aws/1.0.0-beta1.json`, D), {
    kind: "mirrorVersion",
    provider: P,
    version: "1.0.0-beta1",
  });
  assertEquals(parseRoute(`/${D}/hashicorp/aws/terraform-provider-aws_5.31.0_linux_amd64.zip`, D), {
    kind: "archive",
    provider: P,
    version: "5.31.0",
    os: "linux",
    arch: "amd64",
  });
  // Hostnames with a port and punycode are valid registry hostnames.
  assertEquals(parseRoute(`/xn--bcher-kva.example:8443/a/b/index.json`, D), {
    kind: "mirrorIndex",
    provider: { hostname: "xn--bcher-kva.example:8443", namespace: "a", type: "b" },
  });
  // Namespace and type are matched case-insensitively.
  assertEquals(parseRoute(`/${D}/HashiCorp/AWS/index.json`, D), {
    kind: "mirrorIndex",
    provider: P,
  });
});

Deno.test("parseRoute() maps registry protocol paths, with and without hostname", () => {
  assertEquals(parseRoute(`/v1/providers/${D}/hashicorp/aws/versions`, "x.example"), {
    kind: "registryVersions",
    provider: P,
  });
  assertEquals(parseRoute(`/v1/providers/hashicorp/aws/versions`, D), {
    kind: "registryVersions",
    provider: P,
  });
  assertEquals(
    parseRoute(`/v1/providers/${D}/hashicorp/aws/5.0.0/download/darwin/arm64`, "x.example"),
    {
      kind: "registryDownload",
      provider: P,
      version: "5.0.0",
      os: "darwin",
      arch: "arm64",
    },
  );
  assertEquals(parseRoute(`/v1/providers/hashicorp/aws/5.0.0/download/darwin/arm64`, D), {
    kind: "registryDownload",
    provider: P,
    version: "5.0.0",
    os: "darwin",
    arch: "arm64",
  });
  assertEquals(parseRoute(`/v1/providers/${D}/hashicorp/aws/5.0.0/SHA256SUMS.sig`, "x.example"), {
    kind: "registrySums",
    provider: P,
    version: "5.0.0",
    signature: true,
  });
  assertEquals(parseRoute(`/v1/providers/hashicorp/aws/5.0.0/SHA256SUMS`, D), {
    kind: "registrySums",
    provider: P,
    version: "5.0.0",
    signature: false,
  });
  // The legacy-namespace lookup, in both forms.
  assertEquals(parseRoute(`/v1/providers/${D}/-/datadog/versions`, "x.example"), {
    kind: "registryLegacyLookup",
    hostname: D,
    type: "datadog",
  });
  assertEquals(parseRoute(`/v1/providers/-/DataDog/versions`, D), {
    kind: "registryLegacyLookup",
    hostname: D,
    type: "datadog",
  });
  assertEquals(parseRoute("/.well-known/terraform.json", D), { kind: "wellKnown" });
  assertEquals(parseRoute("/-/healthz", D), { kind: "health" });
});

Deno.test("parseRoute() returns undefined (404) for well-formed paths nothing is served at", () => {
  assertEquals(parseRoute("/", D), { kind: "status" });
  for (
    const p of [
      "/foo",
      `/${D}/a/b`,
      `/${D}/a/b/c/d`,
      `/${D}/a/b/readme.txt`,
      "/v1/providers/a/b/c/d/e",
      // A trailing slash: well-formed, and not the resource (issue 11).
      `/${D}/a/b/index.json/`,
      `/${D}/a/b/`,
      `/v1/providers/${D}/a/b/versions/`,
      `/v1/providers/-/b/versions/`,
      "/v1/providers/",
      "/-/healthz/",
      // Unknown file names are unknown, whatever the names before them.
      `/UPPER.example/a/b/readme.txt`,
      `/${D}/-a/b/LICENSE`,
      // Unknown module shapes, likewise.
      `/v1/modules/${D}/a/b/c/d/e/f`,
      `/v1/modules/-bad-/a/b`,
    ]
  ) {
    assertEquals(parseRoute(p, D), undefined, p);
  }
});

Deno.test("parseRoute() rejects traversal, encodings and invalid names", () => {
  // Traversal and smuggled bytes are always a BadPathError (400), never a
  // mere "unknown" (404), trailing slash or not.
  for (
    const p of [
      `/${D}/../../etc/passwd`,
      `/${D}/../`,
      `/${D}/a/b/../`,
      `/${D}/a/./`,
      `/${D}/a/%2e%2e/index.json`,
      `/${D}/a/%2e%2e/`,
      `/${D}/a%2fb/c/index.json`,
      `/${D}/a\\b/c/index.json`,
      `/${D}/a/b\x00/index.json`,
      `/${D}/a/b\x00/`,
      `/${D}//b/index.json`,
      `/v1/providers/${D}/-/../versions`,
      `/v1/providers/-/%2e%2e/versions`,
      `/v1/providers/-/-bad-/versions`,
      `/v1/providers/UPPER.example/-/b/versions`,
    ]
  ) {
    assertThrows(() => parseRoute(p, D), BadPathError, p);
  }
  const bad = [
    `/${D}/../../etc/passwd`,
    `/${D}/a/%2e%2e/index.json`,
    `/${D}/a%2fb/c/index.json`,
    `/${D}/a\\b/c/index.json`,
    `/${D}/a/b\x00/index.json`,
    `/${D}//b/index.json`,
    `/${D}/./b/index.json`,
    `/UPPER.example/a/b/index.json`,
    `/-bad-.example/a/b/index.json`,
    `/${D}/-a/b/index.json`,
    `/${D}/a/b/1.2.json`,
    `/${D}/a/b/01.2.3.json`,
    `/${D}/a/b/terraform-provider-c_1.0.0_linux_amd64.zip`,
    `/${D}/a/b/terraform-provider-b_1.0.0_linux.zip`,
    `/${D}/a/b/terraform-provider-b_1.0.0_lin/ux_amd64.zip`,
    `/${D}/${"a".repeat(300)}/b/index.json`,
    `/v1/providers/${D}/a/b/x.y/download/linux/amd64`,
  ];
  for (const p of bad) {
    let threw = false;
    try {
      const r = parseRoute(p, D);
      threw = r === undefined; // unknown shapes are 404s, which is also safe
    } catch (e) {
      threw = e instanceof BadPathError;
    }
    assertEquals(threw, true, p);
  }
  assertThrows(() => parseRoute(`/${D}/a/%2e%2e/index.json`, D), BadPathError);
});
