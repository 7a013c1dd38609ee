// Talking to waylay's web API: fetch with the XSRF header, and the flow shapes (mitmweb's
// field names).

export type Pair = [string, string];

export interface Message {
  http_version: string;
  headers: Pair[];
  contentLength: number | null;
  timestamp_start: number;
  timestamp_end: number | null;
}

export interface Req extends Message {
  method: string;
  scheme: string;
  host: string;
  port: number;
  path: string;
  pretty_host: string;
}

export interface Resp extends Message {
  status_code: number;
  reason: string;
}

export interface Conn {
  peername: [string, number] | null;
  sockname: [string, number] | null;
  address?: [string, number];
  tls_established: boolean;
  sni: string | null;
  alpn: string | null;
  tls_version: string | null;
  cipher: string | null;
  timestamp_start: number | null;
  timestamp_tcp_setup?: number | null;
  timestamp_tls_setup: number | null;
  timestamp_end: number | null;
}

export interface Flow {
  id: string;
  seq: number;
  type: "http" | "tcp";
  intercepted: boolean;
  is_replay: string | null;
  modified: boolean;
  marked: string;
  comment: string;
  live: boolean;
  timestamp_created: number;
  client_conn: Conn;
  server_conn: Conn | null;
  request?: Req;
  response?: Resp;
  error?: { msg: string; timestamp: number };
  websocket?: { messages_meta: { count: number; contentLength: number }; close_code: number | null; close_reason: string };
  messages_meta?: { count: number; contentLength: number };
  /** The breakpoint rules that edited the flow, per phase (waylay's own field). */
  breakpoint_rule?: { request?: string; response?: string } | null;
}

export interface Update {
  type: string;
  payload: any;
  seq: number;
}

function xsrf(): string {
  const name = `waylay-xsrf-${location.port || (location.protocol === "https:" ? "443" : "80")}=`;
  for (const c of document.cookie.split(";")) {
    const t = c.trim();
    if (t.startsWith(name)) return t.slice(name.length);
  }
  return "";
}

export class ApiError extends Error {
  constructor(public status: number, message: string, public body: any) {
    super(message);
  }
}

export async function api(method: string, path: string, body?: unknown): Promise<any> {
  const headers: Record<string, string> = {};
  if (method !== "GET") headers["X-XSRFToken"] = xsrf();
  let payload: BodyInit | undefined;
  if (typeof body === "string" || body instanceof Blob) payload = body;
  else if (body !== undefined) {
    payload = JSON.stringify(body);
    headers["Content-Type"] = "application/json";
  }
  const r = await fetch(path, { method, headers, body: payload, credentials: "same-origin" });
  const text = await r.text();
  let parsed: any = text;
  try {
    parsed = JSON.parse(text);
  } catch {
    /* plain text */
  }
  if (!r.ok) {
    const msg = parsed?.error?.message ?? (typeof parsed === "string" ? parsed.trim() : r.statusText);
    throw new ApiError(r.status, msg, parsed);
  }
  return parsed;
}

/** The newest `limit` flows (older than `before`, a seq, when given), oldest first. */
export async function fetchFlows(limit: number, before?: number): Promise<{ flows: Flow[]; seq: number }> {
  const r = await fetch(`/flows?limit=${limit}${before ? `&before=${before}` : ""}`, { credentials: "same-origin" });
  if (!r.ok) throw new ApiError(r.status, await r.text(), null);
  const seq = Number(r.headers.get("x-waylay-seq") ?? "0");
  return { flows: await r.json(), seq };
}

/** A text answer as it is (not parsed as JSON). */
export async function apiText(path: string): Promise<string> {
  const r = await fetch(path, { credentials: "same-origin" });
  const text = await r.text();
  if (!r.ok) throw new ApiError(r.status, text.trim(), null);
  return text;
}
