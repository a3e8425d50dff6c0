/**
 * The module registry protocol as a pull-through cache: `versions` (kept in
 * `refs/` like a provider's list), `{version}/download` answering 204 with
 * `X-Terraform-Get` at Repoxy's own immutable archive (with the upstream's
 * `//subdir` appended, as go-getter expects) or, for sources Repoxy does not
 * fetch, the upstream's location unchanged; and the archive itself.
 * @module
 */
import { NotFoundError } from "../http/errors.ts";
import { serveFile } from "../http/serve_file.ts";
import { MODULE_ARCHIVE_NAME, type ModuleRef } from "../protocol/paths.ts";
import { unknownModuleMessage } from "../protocol/names.ts";
import type { RouteHandler } from "./context.ts";
import { withDeadline } from "./deadline.ts";
import { jsonResponse } from "./json_answer.ts";

/** The rooted path of Repoxy's archive of a module version. */
export function moduleArchivePath(m: ModuleRef, version: string): string {
  return `/v1/modules/${m.hostname}/${m.namespace}/${m.name}/${m.system}/${version}/${MODULE_ARCHIVE_NAME}`;
}

/** `GET /v1/modules/{host}/{ns}/{name}/{system}/versions`: the upstream's list, cached. */
export const moduleVersions: RouteHandler<"moduleVersions"> = async (req, ctx, r, s) => {
  const got = await withDeadline(req, ctx, (signal) => s.modules.versions(r.module, signal));
  ctx.cache = got.status;
  return jsonResponse(req, got.body, got.status, 0);
};

/**
 * `GET /v1/modules/{host}/{ns}/{name}/{system}/{version}/download`: 204 with
 * `X-Terraform-Get` and no body, the answer both clients read (Terraform
 * reads only the header; OpenTofu reads the header of a 204).
 */
export const moduleDownload: RouteHandler<"moduleDownload"> = async (req, ctx, r, s) => {
  const got = await withDeadline(
    req,
    ctx,
    (signal) => s.modules.download(r.module, r.version, signal),
  );
  let location: string;
  if (got.kind === "passthrough") {
    ctx.cache = "miss";
    location = got.location;
  } else {
    ctx.cache = got.status;
    const base = s.config.publicUrl ?? "/";
    const rooted = moduleArchivePath(r.module, r.version);
    // go-getter splits `//subdir` off before the query, and moves the query back.
    const sub = got.subdir ? `//${got.subdir}` : "";
    location = `${base}${rooted.slice(1)}${sub}${ctx.signUrl?.(rooted) ?? ""}`;
  }
  return new Response(null, {
    status: 204,
    headers: {
      "x-terraform-get": location,
      "cache-control": "no-store",
      "x-repoxy-cache": ctx.cache ?? "miss",
    },
  });
};

/** `GET …/{version}/module.tar.gz`: the stored archive (fetched and stored first if needed). */
export const moduleArchive: RouteHandler<"moduleArchive"> = async (req, ctx, r, s) => {
  let opened = await s.modules.deps.store.open(r.module, r.version);
  ctx.cache = "hit";
  if (!opened) {
    if (s.config.offline) throw new NotFoundError(unknownModuleMessage(r.module, true));
    await s.modules.ensure(r.module, r.version);
    opened = await s.modules.deps.store.open(r.module, r.version);
    ctx.cache = "miss";
    if (!opened) throw new NotFoundError(`module archive of ${r.version} is not stored`);
  }
  const { file, record } = opened;
  await file.markServing();
  const res = serveFile(req, {
    file,
    size: file.size,
    mtime: file.mtime,
    sha256: record.sha256,
    contentType: "application/gzip",
  }, { headers: { "x-repoxy-cache": ctx.cache }, onFinish: ctx.done });
  ctx.reported = true;
  return res;
};
