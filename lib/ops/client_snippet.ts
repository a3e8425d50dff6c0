/**
 * The CLI configuration a user pastes into `.terraformrc` / `.tofurc` to use
 * this instance (printed at start-up and shown on the status page).
 * @module
 */

/**
 * The CLI configuration a user pastes into `.terraformrc` / `.tofurc` for this
 * instance: the network mirror block when served over HTTPS (the client
 * requires it), and the registry `host` blocks for every upstream.
 */
export function clientSnippet(baseUrl: string, upstreams: string[], tls: boolean): string {
  const base = baseUrl.endsWith("/") ? baseUrl : baseUrl + "/";
  const lines: string[] = [];
  if (tls) {
    lines.push(
      "# Network mirror (all providers through Repoxy):",
      "provider_installation {",
      "  network_mirror {",
      `    url = "${base}"`,
      "  }",
      "}",
      "",
    );
  } else {
    lines.push(
      "# The network mirror protocol needs HTTPS (set tls.cert and tls.key);",
      "# over plain http use the registry protocol:",
    );
  }
  lines.push("# Pull-through registry (keeps publisher signatures, all-platform lock hashes):");
  for (const h of upstreams) {
    lines.push(
      `host "${h}" {`,
      "  services = {",
      `    "providers.v1" = "${base}v1/providers/${h}/"`,
      `    "modules.v1"   = "${base}v1/modules/${h}/"`,
      "  }",
      "}",
    );
  }
  return lines.join("\n");
}
