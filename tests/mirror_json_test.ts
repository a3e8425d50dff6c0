import { assertEquals } from "../lib/deps/assert.ts";
import { mirrorIndexJson, mirrorVersionJson } from "../lib/protocol/mirror_json.ts";
import { rewriteDownloadDoc } from "../lib/protocol/registry_json.ts";
import { compareVersions } from "../lib/protocol/names.ts";

Deno.test("mirrorIndexJson() maps every version to {} newest first", () => {
  const text = mirrorIndexJson(["1.0.0", "1.10.0", "1.2.0", "2.0.0-rc1", "2.0.0"]);
  const parsed = JSON.parse(text);
  assertEquals(Object.keys(parsed.versions), ["2.0.0", "2.0.0-rc1", "1.10.0", "1.2.0", "1.0.0"]);
  assertEquals(parsed.versions["1.0.0"], {});
});

Deno.test("mirrorVersionJson() writes archives keyed by platform", () => {
  const text = mirrorVersionJson([
    {
      platform: "linux_amd64",
      url: "terraform-provider-x_1.0.0_linux_amd64.zip",
      hashes: ["h1:a", "zh:b"],
    },
    {
      platform: "darwin_arm64",
      url: "terraform-provider-x_1.0.0_darwin_arm64.zip",
      hashes: ["zh:c"],
    },
  ]);
  assertEquals(JSON.parse(text), {
    archives: {
      darwin_arm64: { url: "terraform-provider-x_1.0.0_darwin_arm64.zip", hashes: ["zh:c"] },
      linux_amd64: { url: "terraform-provider-x_1.0.0_linux_amd64.zip", hashes: ["h1:a", "zh:b"] },
    },
  });
});

Deno.test("rewriteDownloadDoc() changes only the three URLs and keeps field order", () => {
  const raw = JSON.stringify({
    protocols: ["5.0"],
    os: "linux",
    arch: "amd64",
    filename: "f.zip",
    download_url: "https://up/f.zip",
    shasums_url: "https://up/SHA256SUMS",
    shasums_signature_url: "https://up/SHA256SUMS.sig",
    shasum: "ab".repeat(32),
    signing_keys: { gpg_public_keys: [{ key_id: "K", ascii_armor: "A" }] },
    packages: { linux_amd64: { hashes: ["zh:x"], package_size: 3 } },
    future_field: [1, 2],
  });
  const out = rewriteDownloadDoc(raw, {
    download_url: "/d.zip",
    shasums_url: "/s",
    shasums_signature_url: "/s.sig",
  });
  const before = JSON.parse(raw);
  const after = JSON.parse(out);
  assertEquals(Object.keys(after), Object.keys(before));
  assertEquals(after.download_url, "/d.zip");
  assertEquals(after.shasums_url, "/s");
  assertEquals(after.shasums_signature_url, "/s.sig");
  for (const k of Object.keys(before)) {
    if (!k.endsWith("_url")) assertEquals(after[k], before[k], k);
  }
  // A URL the upstream did not name is not invented.
  const noSig = JSON.parse(rewriteDownloadDoc(JSON.stringify({ download_url: "x" }), {
    download_url: "/d",
    shasums_url: "/s",
    shasums_signature_url: "/s.sig",
  }));
  assertEquals(noSig, { download_url: "/d" });
});

Deno.test("compareVersions() follows semver precedence", () => {
  const sorted = [
    "1.0.0",
    "1.0.0-alpha",
    "1.0.0-alpha.1",
    "1.0.0-beta",
    "1.0.0-beta.2",
    "1.0.0-beta.11",
    "0.9.9",
  ]
    .sort(compareVersions);
  assertEquals(sorted, [
    "0.9.9",
    "1.0.0-alpha",
    "1.0.0-alpha.1",
    "1.0.0-beta",
    "1.0.0-beta.2",
    "1.0.0-beta.11",
    "1.0.0",
  ]);
});
