/**
 * Versions whose registry `platforms` list is wrong in each of the ways real
 * registries' are (issue 11 point 2), for the fake registry.
 * @module
 */
import type { FakeProviderSpec } from "./fake_registry.ts";

/** What every shape publishes: these archives, each in SHA256SUMS with a download document. */
export const PUBLISHED = ["linux_amd64", "darwin_arm64", "windows_amd64"];

/**
 * One provider per shape, each publishing {@link PUBLISHED} as 1.0.0:
 * - `wrong`: lists first a platform that was never published (its download
 *   document is 404), then two real ones, an unpublished one, and leaves
 *   windows_amd64 out;
 * - `bare`: no `platforms` key at all;
 * - `empty`: `platforms: []`;
 * - `partial`: lists only linux_amd64;
 * - `hidden`: lists all three, but linux_amd64's download document is 404.
 */
export const SHAPES: FakeProviderSpec[] = [
  {
    namespace: "example",
    type: "wrong",
    versions: [{
      version: "1.0.0",
      platforms: PUBLISHED,
      listed: ["linux_arm64", "linux_amd64", "darwin_arm64", "openbsd_386"],
    }],
  },
  {
    namespace: "example",
    type: "bare",
    versions: [{ version: "1.0.0", platforms: PUBLISHED, listed: null }],
  },
  {
    namespace: "example",
    type: "empty",
    versions: [{ version: "1.0.0", platforms: PUBLISHED, listed: [] }],
  },
  {
    namespace: "example",
    type: "partial",
    versions: [{ version: "1.0.0", platforms: PUBLISHED, listed: ["linux_amd64"] }],
  },
  {
    namespace: "example",
    type: "hidden",
    versions: [{ version: "1.0.0", platforms: PUBLISHED, hiddenDownloads: ["linux_amd64"] }],
  },
];
