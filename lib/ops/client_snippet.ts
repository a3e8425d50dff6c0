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
export function clientSnippet(
  baseUrl: string,
  upstreams: string[],
  tls: boolean,
  auth = false,
): string {
  const base = baseUrl.endsWith("/") ? baseUrl : baseUrl + "/";
  const lines: string[] = [];
  if (auth) {
    // Terraform picks credentials by the host it believes it talks to: the
    // mirror's own host for network_mirror, the registry's for a host block.
    const mirrorHost = new URL(base).host;
    lines.push(
      "# This mirror needs a token (ask its operator):",
      `credentials "${mirrorHost}" {`,
      `  token = "<your token>"`,
      "}",
    );
    for (const h of upstreams) {
      lines.push(`credentials "${h}" {`, `  token = "<your token>"`, "}");
    }
    lines.push("");
  }
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
