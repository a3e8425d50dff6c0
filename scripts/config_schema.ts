/**
 * Writes `repoxy.schema.json`, the JSON Schema of `repoxy.json`, from the
 * valibot schema the loader checks with (`lib/config/schema.ts`), so editors
 * validate and complete the file through its `"$schema"` key. Run
 * `deno task schema` after changing a config key; tests/config_schema_test.ts
 * fails while the committed file differs from what this prints.
 * @module
 */
import { toJsonSchema } from "../lib/deps/valibot_json_schema.ts";
import { CONFIG_SCHEMA } from "../lib/config/schema.ts";

/** Where the schema file lives, next to config.example.json. */
export const SCHEMA_FILE = new URL("../repoxy.schema.json", import.meta.url);

/** The text of `repoxy.schema.json`: stable key order, two-space indent, final newline. */
export function renderConfigSchema(): string {
  const schema = toJsonSchema(CONFIG_SCHEMA, {
    // The input side: what a person writes. Durations become ms, sizes bytes,
    // only after the file is read; that conversion is the loader's.
    typeMode: "input",
    // Checks JSON Schema cannot express (port ranges, CIDRs, hostnames, the
    // timer ceiling) stay the loader's; the file says what it can.
    ignoreActions: ["check", "raw_check"],
    errorMode: "throw",
  });
  const { $schema, ...rest } = schema;
  return JSON.stringify(
    {
      $schema,
      title: "repoxy.json",
      description: "Repoxy configuration (README.md lists every key and its default).",
      ...rest,
    },
    null,
    2,
  ) + "\n";
}

if (import.meta.main) {
  await Deno.writeTextFile(SCHEMA_FILE, renderConfigSchema());
}
