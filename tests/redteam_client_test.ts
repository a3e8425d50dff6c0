/**
 * Red team, client and filesystem side (issue 10): attacks a hostile client
 * or local user would try that the feature tests did not, each pinned here
 * once it held. Handler-level where the socket is not the point.
 */
import { assert, assertEquals } from "../lib/deps/assert.ts";
import { mirrorFixture, TWO_PROVIDERS } from "./_helpers.ts";

const ALL = "rt-all-token-0123456789abcdef";
const OTHER_NS = "rt-otherns-token-0123456789abcdef";
const OTHER_UP = "rt-otherup-token-0123456789abcdef";
const AUTH = {
  tokens: [
    { name: "all", token: ALL },
    { name: "otherns", token: OTHER_NS, namespaces: ["visible"] },
    { name: "otherup", token: OTHER_UP, upstreams: ["private.example"] },
  ],
};
const bearer = (t: string) => ({ headers: { authorization: `Bearer ${t}` } });

/** Status, headers and body of an answer, for comparing two answers whole. */
async function whole(res: Response): Promise<string> {
  const headers = [...res.headers].map(([k, v]) => `${k}: ${v}`).sort().join("\n");
  return `${res.status}\n${headers}\n\n${await res.text()}`;
}

Deno.test("a provider a token may not see answers byte for byte like one the upstream lacks", async () => {
  await using f = await mirrorFixture({ providers: TWO_PROVIDERS, config: { auth: AUTH } });
  // `example/alpha` exists but is outside the token's rules; `visible/alpha` (same
  // length, inside the rules) does not exist upstream.
  const routes = [
    "/registry.terraform.io/NS/alpha/index.json",
    "/registry.terraform.io/NS/alpha/1.1.0.json",
    "/registry.terraform.io/NS/alpha/terraform-provider-alpha_1.1.0_linux_amd64.zip",
    "/v1/providers/registry.terraform.io/NS/alpha/versions",
    "/v1/providers/NS/alpha/versions",
    "/v1/providers/registry.terraform.io/NS/alpha/1.1.0/download/linux/amd64",
    "/v1/providers/registry.terraform.io/NS/alpha/1.1.0/SHA256SUMS",
    "/v1/providers/registry.terraform.io/NS/alpha/1.1.0/SHA256SUMS.sig",
    "/v1/modules/registry.terraform.io/NS/net/aws/versions",
    "/v1/modules/registry.terraform.io/NS/net/aws/1.0.0/download",
  ];
  for (const route of routes) {
    for (const method of ["GET", "HEAD"]) {
      const init = { method, ...bearer(OTHER_NS) };
      const hidden = await whole(await f.get(route.replace("NS", "example"), init));
      const missing = await whole(await f.get(route.replace("NS", "visible"), init));
      assertEquals(hidden.replaceAll("example", "visible"), missing, `${method} ${route}`);
      assertEquals(hidden.split("\n")[0], "404");
    }
  }
});

Deno.test("the status page shows a token only what its rules let it see; metrics refuse a ruled token", async () => {
  await using f = await mirrorFixture({ providers: TWO_PROVIDERS, config: { auth: AUTH } });
  // Cache one archive of example/alpha, through a token that may see it.
  const doc = await f.get("/registry.terraform.io/example/alpha/1.1.0.json", bearer(ALL));
  const { archives } = await doc.json() as { archives: Record<string, { url: string }> };
  const zip = await f.get(`/registry.terraform.io/example/alpha/${archives.linux_amd64!.url}`);
  assertEquals(zip.status, 200);
  await zip.arrayBuffer();

  // The archive is recorded once its commit finished, just after the body ended.
  let fullText = "";
  for (let i = 0; i < 200 && !fullText.includes("alpha"); i++) {
    if (i) await new Promise((r) => setTimeout(r, 10));
    const full = await f.get("/", bearer(ALL));
    assertEquals(full.status, 200);
    fullText = await full.text();
  }
  assert(fullText.includes("alpha"), "the cached provider is listed for a token without rules");
  assert(fullText.includes("registry.terraform.io"));

  for (const token of [OTHER_NS, OTHER_UP]) {
    const page = await f.get("/", bearer(token));
    assertEquals(page.status, 200);
    const text = await page.text();
    assert(!text.includes("alpha"), "a hidden provider is not listed");
    if (token === OTHER_UP) {
      assert(!text.includes("registry.terraform.io"), "nor a hidden upstream");
    }
    const m = await f.get("/-/metrics", bearer(token));
    assertEquals(m.status, 403);
    const body = await m.text();
    assert(!body.includes("registry.terraform.io") && !body.includes("alpha"));
  }
  const m = await f.get("/-/metrics", bearer(ALL));
  assertEquals(m.status, 200);
  assert((await m.text()).includes("registry.terraform.io"));
});
