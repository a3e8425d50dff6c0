/**
 * An upstream outage costs one failed refresh, not one per request: once a
 * refresh of a registry's metadata has failed, stored (stale) copies of that
 * registry's documents are answered at once for a short while instead of each
 * request retrying the dead upstream (found by the battery: after the 30 s
 * freshness window every metadata answer took ~1.2 s of retries against a
 * refusing upstream, discovery and list each, so an `init` of n providers
 * waited about 2.4 s × n through the network mirror).
 */
import { assert, assertEquals } from "../lib/deps/assert.ts";
import { mirrorFixture, TWO_PROVIDERS } from "./_helpers.ts";

const H = "registry.terraform.io";

Deno.test("during an outage, stale metadata answers cost one failed refresh per registry", async () => {
  let down = false;
  let now = 1_000_000;
  await using t = await mirrorFixture({
    providers: TWO_PROVIDERS,
    registry: { intercept: () => down ? new Response("down", { status: 503 }) : undefined },
    deps: { now: () => now },
  });
  const paths = [
    `/${H}/example/alpha/index.json`,
    `/${H}/example/beta/index.json`,
    `/${H}/example/beta/2.3.4.json`,
    `/v1/providers/${H}/example/alpha/versions`,
  ];
  for (const p of paths) assertEquals((await t.get(p)).status, 200, p);
  await t.app.settle();

  down = true;
  now += 3_600_000; // every list is stale
  const mark = t.upstream.length;
  const first = await t.get(paths[0]!);
  assertEquals([first.status, first.headers.get("x-repoxy-cache")], [200, "stale"]);
  await first.body?.cancel();
  const failedOnce = t.upstream.length - mark;
  assert(failedOnce > 0, "the first stale answer tried the upstream");

  // Every other stale document of that registry: answered without trying again.
  for (const p of [...paths.slice(1), paths[0]!]) {
    const res = await t.get(p);
    assertEquals([res.status, res.headers.get("x-repoxy-cache")], [200, "stale"], p);
    await res.body?.cancel();
  }
  assertEquals(t.upstream.length - mark, failedOnce);

  // A while later the upstream is tried again; once it is back, lists are fresh again.
  down = false;
  now += 60_000;
  const retried = t.upstream.length;
  for (const p of [paths[1]!, paths[0]!]) {
    const res = await t.get(p);
    assertEquals([res.status, res.headers.get("x-repoxy-cache")], [200, "miss"], p);
    await res.body?.cancel();
  }
  assert(t.upstream.slice(retried).every((u) => u.status === 200));
});
