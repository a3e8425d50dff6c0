/**
 * Where the S3 credentials come from: a pair from the config (each value a
 * literal, `env:NAME` or `file:path`, resolved at config load), else the
 * standard AWS chain, in its usual order: the environment
 * (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`), the
 * shared credentials file (`AWS_SHARED_CREDENTIALS_FILE` or
 * `~/.aws/credentials`, profile `AWS_PROFILE` or `default`), a web identity
 * token (`AWS_WEB_IDENTITY_TOKEN_FILE` + `AWS_ROLE_ARN`: Kubernetes service
 * account roles), the container endpoint (`AWS_CONTAINER_CREDENTIALS_*`: ECS,
 * EKS Pod Identity) and the instance metadata service (IMDSv2). Temporary
 * credentials are renewed five minutes before they expire.
 * @module
 */
import type { CredentialSource, S3Credentials } from "./s3_client.ts";
import { xmlValue } from "./s3_client.ts";

/** What the chain reads; tests pass their own. */
export interface ChainEnv {
  getEnv(name: string): string | undefined;
  readTextFile(path: string): Promise<string>;
  fetch: typeof fetch;
  now(): number;
}

const realEnv: ChainEnv = {
  getEnv: (n) => {
    try {
      return Deno.env.get(n);
    } catch {
      return undefined; // a build that may not read this variable: as if unset
    }
  },
  readTextFile: (p) => Deno.readTextFile(p),
  fetch: (i, init) => fetch(i, init),
  now: Date.now,
};

/** Credentials that never change (from the config). */
export function fixedCredentials(c: S3Credentials): CredentialSource {
  return () => Promise.resolve(c);
}

/** Renewed this long before temporary credentials expire. */
const RENEW_BEFORE_MS = 5 * 60_000;

/** The AWS default chain, remembered until shortly before the credentials expire. */
export function awsCredentialChain(env: ChainEnv = realEnv): CredentialSource {
  let held: S3Credentials | undefined;
  let pending: Promise<S3Credentials> | undefined;
  return () => {
    if (held && (held.expiresAt === undefined || held.expiresAt - RENEW_BEFORE_MS > env.now())) {
      return Promise.resolve(held);
    }
    pending ??= resolveChain(env).then((c) => held = c).finally(() => pending = undefined);
    return pending;
  };
}

async function resolveChain(env: ChainEnv): Promise<S3Credentials> {
  const tried: string[] = [];
  for (
    const [name, step] of [
      ["environment", fromEnv],
      ["shared credentials file", fromSharedFile],
      ["web identity", fromWebIdentity],
      ["container endpoint", fromContainer],
      ["instance metadata", fromInstanceMetadata],
    ] as const
  ) {
    try {
      const c = await step(env);
      if (c) return c;
      tried.push(`${name}: not configured`);
    } catch (e) {
      tried.push(`${name}: ${(e as Error).message}`);
    }
  }
  throw new Error(`no S3 credentials found (${tried.join("; ")})`);
}

function fromEnv(env: ChainEnv): Promise<S3Credentials | undefined> {
  const id = env.getEnv("AWS_ACCESS_KEY_ID");
  const secret = env.getEnv("AWS_SECRET_ACCESS_KEY");
  if (!id || !secret) return Promise.resolve(undefined);
  const token = env.getEnv("AWS_SESSION_TOKEN");
  return Promise.resolve({
    accessKeyId: id,
    secretAccessKey: secret,
    ...(token ? { sessionToken: token } : {}),
  });
}

/** The keys of one `[profile]` section of an INI file. */
export function iniSection(text: string, section: string): Map<string, string> | undefined {
  let current: string | undefined;
  let found: Map<string, string> | undefined;
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.replace(/[;#].*$/, "").trim();
    const head = /^\[\s*(.+?)\s*\]$/.exec(line);
    if (head) {
      current = head[1];
      if (current === section) found ??= new Map();
      continue;
    }
    const kv = /^([A-Za-z0-9_]+)\s*=\s*(.*)$/.exec(line);
    if (kv && current === section) found!.set(kv[1]!.toLowerCase(), kv[2]!.trim());
  }
  return found;
}

async function fromSharedFile(env: ChainEnv): Promise<S3Credentials | undefined> {
  const home = env.getEnv("HOME");
  const path = env.getEnv("AWS_SHARED_CREDENTIALS_FILE") ??
    (home ? `${home}/.aws/credentials` : undefined);
  if (!path) return undefined;
  let text: string;
  try {
    text = await env.readTextFile(path);
  } catch {
    return undefined;
  }
  const profile = env.getEnv("AWS_PROFILE") ?? "default";
  const s = iniSection(text, profile);
  const id = s?.get("aws_access_key_id");
  const secret = s?.get("aws_secret_access_key");
  if (!id || !secret) return undefined;
  const token = s?.get("aws_session_token");
  return { accessKeyId: id, secretAccessKey: secret, ...(token ? { sessionToken: token } : {}) };
}

async function fromWebIdentity(env: ChainEnv): Promise<S3Credentials | undefined> {
  const tokenFile = env.getEnv("AWS_WEB_IDENTITY_TOKEN_FILE");
  const role = env.getEnv("AWS_ROLE_ARN");
  if (!tokenFile || !role) return undefined;
  const token = (await env.readTextFile(tokenFile)).trim();
  const region = env.getEnv("AWS_REGION") ?? env.getEnv("AWS_DEFAULT_REGION");
  const sts = region ? `https://sts.${region}.amazonaws.com/` : "https://sts.amazonaws.com/";
  // The token goes in a form body (as the AWS SDKs send it), never in the
  // URL: URLs end up in access logs and error messages.
  const form = new URLSearchParams({
    Action: "AssumeRoleWithWebIdentity",
    Version: "2011-06-15",
    RoleArn: role,
    RoleSessionName: env.getEnv("AWS_ROLE_SESSION_NAME") ?? "repoxy",
    WebIdentityToken: token,
  });
  let r: Response;
  try {
    r = await env.fetch(sts, {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: form.toString(),
      signal: AbortSignal.timeout(5_000),
    });
  } catch (e) {
    // Whatever the error says, the token is not repeated (it is logged).
    throw new Error(`cannot reach ${sts}: ${(e as Error).message.replaceAll(token, "[token]")}`);
  }
  const xml = await r.text();
  if (r.status !== 200) throw new Error(`STS answered ${r.status}`);
  return parseTemporary({
    AccessKeyId: xmlValue(xml, "AccessKeyId"),
    SecretAccessKey: xmlValue(xml, "SecretAccessKey"),
    Token: xmlValue(xml, "SessionToken"),
    Expiration: xmlValue(xml, "Expiration"),
  });
}

function parseTemporary(j: Record<string, unknown>): S3Credentials {
  const id = j.AccessKeyId;
  const secret = j.SecretAccessKey;
  if (typeof id !== "string" || typeof secret !== "string") {
    throw new Error("the answer has no AccessKeyId/SecretAccessKey");
  }
  const token = typeof j.Token === "string" ? j.Token : undefined;
  const exp = typeof j.Expiration === "string" ? Date.parse(j.Expiration) : NaN;
  return {
    accessKeyId: id,
    secretAccessKey: secret,
    ...(token ? { sessionToken: token } : {}),
    ...(Number.isFinite(exp) ? { expiresAt: exp } : {}),
  };
}

async function fromContainer(env: ChainEnv): Promise<S3Credentials | undefined> {
  const full = env.getEnv("AWS_CONTAINER_CREDENTIALS_FULL_URI");
  const rel = env.getEnv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI");
  const url = full ?? (rel ? `http://169.254.170.2${rel}` : undefined);
  if (!url) return undefined;
  const tokenFile = env.getEnv("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE");
  const auth = tokenFile
    ? (await env.readTextFile(tokenFile)).trim()
    : env.getEnv("AWS_CONTAINER_AUTHORIZATION_TOKEN");
  const r = await env.fetch(url, {
    headers: auth ? { authorization: auth } : {},
    signal: AbortSignal.timeout(2_000),
  });
  if (r.status !== 200) {
    await r.body?.cancel();
    throw new Error(`the container endpoint answered ${r.status}`);
  }
  return parseTemporary(await r.json());
}

async function fromInstanceMetadata(env: ChainEnv): Promise<S3Credentials | undefined> {
  if (env.getEnv("AWS_EC2_METADATA_DISABLED") === "true") return undefined;
  const base = env.getEnv("AWS_EC2_METADATA_SERVICE_ENDPOINT") ?? "http://169.254.169.254";
  const signal = () => AbortSignal.timeout(1_000);
  let t: Response;
  try {
    t = await env.fetch(`${base}/latest/api/token`, {
      method: "PUT",
      headers: { "x-aws-ec2-metadata-token-ttl-seconds": "21600" },
      signal: signal(),
    });
  } catch {
    return undefined; // not on an instance
  }
  const token = await t.text();
  if (t.status !== 200) return undefined;
  const h = { "x-aws-ec2-metadata-token": token };
  const path = `${base}/latest/meta-data/iam/security-credentials/`;
  const roles = await env.fetch(path, { headers: h, signal: signal() });
  const role = (await roles.text()).split("\n")[0]?.trim();
  if (roles.status !== 200 || !role) return undefined;
  const c = await env.fetch(path + encodeURIComponent(role), { headers: h, signal: signal() });
  if (c.status !== 200) {
    await c.body?.cancel();
    throw new Error(`the instance metadata service answered ${c.status}`);
  }
  return parseTemporary(await c.json());
}
