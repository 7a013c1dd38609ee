// waylay's web UI: a live flow list (virtual scrolling), filters evaluated by the server,
// flow details with content views and editing, intercept, actions, and the event log.

import { render } from "preact";
import { useEffect, useRef, useState } from "preact/hooks";
import { ApiError, Flow, Pair, api, apiText } from "./api";
import { FilterName, OptionInfo, Store } from "./store";
import { RuleNote, RulesPanel } from "./rules";

const store = new Store();

function useStore(): number {
  const [n, setN] = useState(0);
  useEffect(() => store.subscribe(() => setN((x) => x + 1)), []);
  return n;
}

// ---- formatting -------------------------------------------------------------------------

function size(n: number | null | undefined): string {
  if (n === null || n === undefined) return "";
  if (n < 1024) return `${n}b`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)}k`;
  return `${(n / 1024 / 1024).toFixed(1)}m`;
}

function duration(f: Flow): number | null {
  const end = f.response?.timestamp_end ?? f.error?.timestamp;
  const start = f.request?.timestamp_start ?? f.timestamp_created;
  return end ? end - start : null;
}

function ms(s: number | null): string {
  if (s === null) return "";
  return s < 1 ? `${Math.round(s * 1000)}ms` : `${s.toFixed(2)}s`;
}

function url(f: Flow): string {
  if (!f.request) {
    const a = f.server_conn?.address;
    return a ? `${a[0]}:${a[1]}` : "tcp";
  }
  const r = f.request;
  const def = r.scheme === "https" ? 443 : 80;
  return `${r.scheme}://${r.pretty_host}${r.port === def ? "" : ":" + r.port}${r.path}`;
}

function tls(f: Flow): boolean {
  return f.request ? f.request.scheme === "https" : !!f.client_conn?.tls_established;
}

function sizeOf(f: Flow): number {
  return (f.request?.contentLength ?? 0) + (f.response?.contentLength ?? 0) + (f.messages_meta?.contentLength ?? 0);
}

function reportError(e: unknown) {
  const msg = e instanceof ApiError ? `${e.status}: ${e.message}` : String(e);
  store.events.push({ id: `ui-${Date.now()}`, level: "error", message: msg });
  store.notify();
}

async function act(method: string, path: string, body?: unknown) {
  try {
    return await api(method, path, body);
  } catch (e) {
    reportError(e);
    return undefined;
  }
}

// ---- columns and sorting ----------------------------------------------------------------

type Col = "tls" | "method" | "path" | "status" | "size" | "time";
const COLS: { id: Col; label: string; key?: (f: Flow) => number | string }[] = [
  { id: "tls", label: "", key: (f) => (tls(f) ? 1 : 0) },
  { id: "method", label: "Method", key: (f) => f.request?.method ?? f.type.toUpperCase() },
  { id: "path", label: "Path", key: (f) => url(f) },
  { id: "status", label: "Status", key: (f) => f.response?.status_code ?? (f.error ? 999 : 0) },
  { id: "size", label: "Size", key: sizeOf },
  { id: "time", label: "Time", key: (f) => duration(f) ?? -1 },
];

const ROW = 24;

function FlowTable(props: { flows: Flow[]; selected: string | null; onSelect: (id: string) => void; sort: [Col | null, boolean]; setSort: (s: [Col | null, boolean]) => void; highlight: Set<string> | null }) {
  const ref = useRef<HTMLDivElement>(null);
  const [top, setTop] = useState(0);
  const [height, setHeight] = useState(600);
  const [follow, setFollow] = useState(true);
  useEffect(() => {
    const el = ref.current;
    if (!el) return;
    const ro = new ResizeObserver(() => setHeight(el.clientHeight));
    ro.observe(el);
    return () => ro.disconnect();
  }, []);
  // Follow the newest flow while scrolled to the bottom.
  useEffect(() => {
    const el = ref.current;
    if (el && follow && props.sort[0] === null) el.scrollTop = el.scrollHeight;
  }, [props.flows.length]);
  // Keep the selected row in view.
  useEffect(() => {
    const el = ref.current;
    const i = props.flows.findIndex((f) => f.id === props.selected);
    if (!el || i < 0) return;
    const y = i * ROW;
    if (y < el.scrollTop) el.scrollTop = y;
    else if (y + ROW > el.scrollTop + el.clientHeight - ROW) el.scrollTop = y + 2 * ROW - el.clientHeight;
  }, [props.selected]);
  const first = Math.max(0, Math.floor(top / ROW) - 10);
  const last = Math.min(props.flows.length, Math.ceil((top + height) / ROW) + 10);
  const rows = props.flows.slice(first, last);
  return (
    <div class="table" ref={ref} onScroll={(e) => {
      const el = e.currentTarget as HTMLDivElement;
      setTop(el.scrollTop);
      setFollow(el.scrollTop + el.clientHeight >= el.scrollHeight - ROW);
    }}>
      <div class="thead">
        {COLS.map((c) => (
          <div class={`th col-${c.id}`} onClick={() => props.setSort(props.sort[0] === c.id ? (props.sort[1] ? [null, false] : [c.id, true]) : [c.id, false])}>
            {c.label}
            {props.sort[0] === c.id ? (props.sort[1] ? " ▾" : " ▴") : ""}
          </div>
        ))}
      </div>
      <div class="tbody" style={{ height: `${props.flows.length * ROW}px` }}>
        {rows.map((f, i) => {
          const cls = ["tr"];
          if (f.id === props.selected) cls.push("selected");
          if (f.intercepted) cls.push("intercepted");
          if (props.highlight?.has(f.id)) cls.push("highlighted");
          if (f.marked) cls.push("marked");
          if (f.error) cls.push("has-error");
          return (
            <div class={cls.join(" ")} data-id={f.id} style={{ top: `${(first + i) * ROW}px` }} onClick={() => props.onSelect(f.id)}>
              <div class="td col-tls">{tls(f) ? <span class="badge tls">TLS</span> : ""}</div>
              <div class="td col-method">{f.request?.method ?? f.type.toUpperCase()}</div>
              <div class="td col-path" title={url(f)}>
                {f.marked ? <span class="mark" title={f.marked} /> : null}
                {f.intercepted ? <span class="badge held">held</span> : null}
                {f.is_replay ? <span class="badge replay">replay</span> : null}
                {url(f)}
              </div>
              <div class={`td col-status status-${Math.floor((f.response?.status_code ?? 0) / 100)}`}>{f.response?.status_code ?? (f.error ? "✕" : "")}</div>
              <div class="td col-size">{size(sizeOf(f))}</div>
              <div class="td col-time">{ms(duration(f))}</div>
            </div>
          );
        })}
      </div>
    </div>
  );
}

// ---- filters ----------------------------------------------------------------------------

function FilterInput(props: { label: string; value: string; error: { message: string; position: number } | null; onChange: (v: string) => void; id: string }) {
  const [text, setText] = useState(props.value);
  useEffect(() => setText(props.value), [props.value]);
  return (
    <label class={`filter ${props.error ? "invalid" : ""}`}>
      <span>{props.label}</span>
      <input id={props.id} value={text} spellcheck={false} placeholder="~d example.com & ~m POST"
        onInput={(e) => setText((e.target as HTMLInputElement).value)}
        onKeyDown={(e) => { if (e.key === "Enter") props.onChange(text); if (e.key === "Escape") (e.target as HTMLInputElement).blur(); }}
        onBlur={() => { if (text !== props.value) props.onChange(text); }} />
      {props.error ? (
        <div class="filter-error" role="alert">
          <code>{text.slice(0, props.error.position)}<u>{text.slice(props.error.position) || " "}</u></code>
          <div>{props.error.message}</div>
        </div>
      ) : null}
    </label>
  );
}

// ---- content views ----------------------------------------------------------------------

function Content(props: { flow: Flow; part: "request" | "response"; editing: boolean; draft?: string; setDraft?: (s: string) => void }) {
  const [view, setView] = useState("auto");
  const [lines, setLines] = useState(200);
  const [data, setData] = useState<{ text: string; view_name: string; truncated: boolean; lines_total: number } | null>(null);
  const [err, setErr] = useState("");
  const m = props.flow[props.part];
  const key = `${props.flow.id}/${props.part}/${view}/${lines}/${m?.contentLength}/${props.flow.modified}`;
  useEffect(() => {
    setErr("");
    if (!m || m.contentLength === null || m.contentLength === 0) {
      setData(null);
      return;
    }
    api("GET", `/flows/${props.flow.id}/${props.part}/content/${view}.json?lines=${lines}`)
      .then(setData)
      .catch((e) => setErr(e instanceof ApiError ? e.message : String(e)));
  }, [key]);
  if (props.editing && props.setDraft) {
    return <textarea class="body-edit" value={props.draft ?? ""} onInput={(e) => props.setDraft?.((e.target as HTMLTextAreaElement).value)} />;
  }
  if (!m) return null;
  if (m.contentLength === null) return <div class="muted">No body held (streamed, or not read yet).</div>;
  if (m.contentLength === 0) return <div class="muted">No content.</div>;
  const image = (m.headers.find(([k]) => k.toLowerCase() === "content-type")?.[1] ?? "").startsWith("image/");
  return (
    <div class="content">
      <div class="content-bar">
        <select value={view} onChange={(e) => setView((e.target as HTMLSelectElement).value)}>
          {["auto", "json", "form", "text", "hex"].map((v) => <option value={v}>{v}</option>)}
        </select>
        <span class="muted">{data?.view_name} {size(m.contentLength)}</span>
        <a href={`/flows/${props.flow.id}/${props.part}/content.data`} download>download</a>
      </div>
      {image && view === "auto" ? <img class="body-image" src={`/flows/${props.flow.id}/${props.part}/content.data`} alt="" /> : null}
      {err ? <div class="error">{err}</div> : <pre class="body">{data?.text}</pre>}
      {data?.truncated ? <button onClick={() => setLines(1e9)}>Show all {data.lines_total} lines</button> : null}
    </div>
  );
}

function Headers(props: { headers: Pair[] }) {
  return (
    <table class="headers">
      <tbody>{props.headers.map(([k, v]) => <tr><td class="hname">{k}</td><td class="hvalue">{v}</td></tr>)}</tbody>
    </table>
  );
}

function headersText(h: Pair[]): string {
  return h.map(([k, v]) => `${k}: ${v}`).join("\n");
}

function parseHeaders(t: string): Pair[] {
  return t.split("\n").map((l) => l.trim()).filter((l) => l).map((l) => {
    const i = l.indexOf(":");
    return (i <= 0 ? [l, ""] : [l.slice(0, i).trim(), l.slice(i + 1).trim()]) as Pair;
  });
}

async function bodyText(f: Flow, part: "request" | "response"): Promise<string> {
  if (!f[part]?.contentLength) return "";
  const r = await fetch(`/flows/${f.id}/${part}/content.data`, { credentials: "same-origin" });
  return r.ok ? await r.text() : "";
}

function MessageTab(props: { flow: Flow; part: "request" | "response" }) {
  const f = props.flow;
  const m = f[props.part]!;
  const [editing, setEditing] = useState(false);
  const [first, setFirst] = useState("");
  const [heads, setHeads] = useState("");
  const [body, setBody] = useState("");
  useEffect(() => setEditing(false), [f.id]);
  const start = async () => {
    setFirst(props.part === "request" ? `${f.request!.method} ${url(f)}` : `${f.response!.status_code} ${f.response!.reason}`);
    setHeads(headersText(m.headers));
    setBody(await bodyText(f, props.part));
    setEditing(true);
  };
  const save = async () => {
    const patch: any = { headers: parseHeaders(heads), content: body };
    if (props.part === "request") {
      const [method, ...rest] = first.trim().split(/\s+/);
      patch.method = method;
      const u = rest.join(" ");
      const mm = /^(https?):\/\/([^/:]+|\[[^\]]+\])(?::(\d+))?(\/.*)?$/.exec(u);
      if (mm) {
        patch.scheme = mm[1];
        patch.host = mm[2].replace(/^\[|\]$/g, "");
        patch.port = mm[3] ? Number(mm[3]) : mm[1] === "https" ? 443 : 80;
        patch.path = mm[4] ?? "/";
      }
    } else {
      const [code, ...reason] = first.trim().split(/\s+/);
      patch.code = Number(code);
      patch.reason = reason.join(" ");
    }
    if (await act("PUT", `/flows/${f.id}`, { [props.part]: patch })) setEditing(false);
  };
  const editable = f.intercepted || !f.live;
  return (
    <div class="message">
      <div class="toolbar">
        {editing ? (
          <>
            <button id="save-edit" onClick={save}>Save</button>
            <button onClick={() => setEditing(false)}>Cancel</button>
          </>
        ) : (
          <button id={`edit-${props.part}`} disabled={!editable} title={editable ? "edit" : "intercept the flow to edit it"} onClick={start}>Edit</button>
        )}
      </div>
      {editing ? (
        <div class="edit">
          <input class="first-line" value={first} onInput={(e) => setFirst((e.target as HTMLInputElement).value)} />
          <textarea class="headers-edit" id={`headers-${props.part}`} rows={Math.max(4, m.headers.length + 2)} value={heads} onInput={(e) => setHeads((e.target as HTMLTextAreaElement).value)} />
          <Content flow={f} part={props.part} editing draft={body} setDraft={setBody} />
        </div>
      ) : (
        <>
          <div class="first-line">
            {props.part === "request" ? `${f.request!.method} ${url(f)} ${m.http_version}` : `${m.http_version} ${f.response!.status_code} ${f.response!.reason}`}
          </div>
          <Headers headers={m.headers} />
          <Content flow={f} part={props.part} editing={false} />
        </>
      )}
    </div>
  );
}

/** Which message `m` (the `i`th of its flow) is: stays the same when the list is fetched again. */
function messageKey(m: any, i: number): string {
  return `${i}/${m.from_client ? "c" : "s"}/${m.timestamp}`;
}

function Messages(props: { flow: Flow }) {
  const f = props.flow;
  const [msgs, setMsgs] = useState<any[]>([]);
  // The text typed for a held message, with that message's key. The list is fetched apart
  // from the flow updates, and the two arrive in either order: a draft belongs to the message
  // it was started on, and neither an update of the flow nor a list fetched again drops it.
  const [draft, setDraft] = useState<{ at: string; text: string } | null>(null);
  const [version, setVersion] = useState(0);
  const count = f.websocket?.messages_meta.count ?? f.messages_meta?.count ?? 0;
  useEffect(() => {
    // Only the newest fetch counts: an older answer arriving late would show fewer messages.
    let current = true;
    api("GET", `/flows/${f.id}/messages/content/auto.json`)
      .then((m) => {
        if (current) setMsgs(m);
      })
      .catch(reportError);
    return () => {
      current = false;
    };
  }, [f.id, count, version]);
  // A held WebSocket or TCP message (the last one) can be edited before it goes on, once the
  // list shows the messages of the flow the page knows to be held: a list newer than the
  // page's copy of the flow (fetched just after an earlier hold was released, its update not
  // here yet) must not offer an edit that the update then takes away.
  const last = msgs.length - 1;
  const held =
    (!!f.websocket || f.type === "tcp") && f.intercepted && msgs.length === count && last >= 0
      ? messageKey(msgs[last], last)
      : null;
  const save = async () => {
    if (draft !== null && (await act("POST", `/flows/${f.id}/messages/content.data`, draft.text))) {
      setDraft(null);
      setVersion((v) => v + 1);
    }
  };
  return (
    <div class="messages">
      {msgs.map((m, i) => {
        const key = messageKey(m, i);
        return (
          <div key={key} class={`msg ${m.from_client ? "from-client" : "from-server"}`}>
            <span class="muted">{m.from_client ? "→" : "←"} {new Date(m.timestamp * 1000).toISOString().slice(11, 23)}</span>
            {key === held ? (
              draft?.at === key ? (
                <div class="edit">
                  <textarea id="message-edit" rows={4} value={draft.text} onInput={(e) => setDraft({ at: key, text: (e.target as HTMLTextAreaElement).value })} />
                  <button id="save-message" onClick={save}>Save</button>
                  <button onClick={() => setDraft(null)}>Cancel</button>
                </div>
              ) : (
                <>
                  <button id="edit-message" title="edit the held message" onClick={() => setDraft({ at: key, text: m.text })}>Edit</button>
                  <pre>{m.text}</pre>
                </>
              )
            ) : (
              <pre>{m.text}</pre>
            )}
          </div>
        );
      })}
      {msgs.length === 0 ? <div class="muted">No messages.</div> : null}
    </div>
  );
}

function ConnectionTab(props: { flow: Flow }) {
  const c = props.flow.client_conn;
  const s = props.flow.server_conn;
  const addr = (a: [string, number] | null | undefined) => (a ? `${a[0]}:${a[1]}` : "");
  const rows = (x: typeof c) => [
    ["address", addr(x.address ?? x.peername)],
    ["local", addr(x.sockname)],
    ["TLS", x.tls_established ? `${x.tls_version ?? ""} ${x.cipher ?? ""}` : "no"],
    ["SNI", x.sni ?? ""],
    ["ALPN", x.alpn ?? ""],
  ];
  return (
    <div>
      <h4>Client</h4>
      <Headers headers={rows(c) as Pair[]} />
      {s ? (<><h4>Server</h4><Headers headers={rows(s) as Pair[]} /></>) : null}
    </div>
  );
}

function TimingTab(props: { flow: Flow }) {
  const f = props.flow;
  const t0 = f.client_conn.timestamp_start ?? f.timestamp_created;
  const items: [string, number | null | undefined][] = [
    ["client connected", f.client_conn.timestamp_start],
    ["client TLS", f.client_conn.timestamp_tls_setup],
    ["server connected", f.server_conn?.timestamp_tcp_setup],
    ["server TLS", f.server_conn?.timestamp_tls_setup],
    ["request start", f.request?.timestamp_start],
    ["request end", f.request?.timestamp_end],
    ["response start", f.response?.timestamp_start],
    ["response end", f.response?.timestamp_end],
  ];
  return (
    <Headers headers={items.filter(([, t]) => t).map(([k, t]) => [k, `+${ms((t as number) - t0)}  (${new Date((t as number) * 1000).toISOString()})`] as Pair)} />
  );
}

function Detail(props: { flow: Flow; tab: string; setTab: (t: string) => void }) {
  const f = props.flow;
  const tabs: string[] = [];
  if (f.request) tabs.push("request");
  if (f.response) tabs.push("response");
  if (f.websocket) tabs.push("websocket");
  if (f.type === "tcp") tabs.push("tcp");
  if (f.error) tabs.push("error");
  tabs.push("connection", "timing", "comment");
  const tab = tabs.includes(props.tab) ? props.tab : tabs[0];
  const [comment, setComment] = useState(f.comment);
  useEffect(() => setComment(f.comment), [f.id, f.comment]);
  return (
    <div class="detail">
      <div class="actions">
        {f.intercepted ? <button id="resume" onClick={() => act("POST", `/flows/${f.id}/resume`)}>Resume (a)</button> : null}
        {f.live ? <button id="kill" title="kill now: both connections close" onClick={() => act("POST", `/flows/${f.id}/kill`)}>Kill (x)</button> : null}
        <button onClick={() => act("POST", `/flows/${f.id}/replay`)}>Replay (r)</button>
        <button onClick={() => act("POST", `/flows/${f.id}/duplicate`)}>Duplicate (D)</button>
        <button onClick={() => act("PUT", `/flows/${f.id}`, { marked: !f.marked })}>{f.marked ? "Unmark" : "Mark"} (m)</button>
        {f.modified ? <button id="revert" onClick={() => act("POST", `/flows/${f.id}/revert`)}>Revert</button> : null}
        <button onClick={() => act("DELETE", `/flows/${f.id}`)}>Delete (d)</button>
      </div>
      <ExportBar flow={f} />
      <RuleNote flow={f} />
      <div class="tabs">
        {tabs.map((t) => <button class={t === tab ? "tab active" : "tab"} onClick={() => props.setTab(t)}>{t}</button>)}
      </div>
      <div class="tab-body">
        {tab === "request" ? <MessageTab flow={f} part="request" /> : null}
        {tab === "response" ? <MessageTab flow={f} part="response" /> : null}
        {tab === "websocket" || tab === "tcp" ? <Messages key={f.id} flow={f} /> : null}
        {tab === "error" ? <pre class="error">{f.error?.msg}</pre> : null}
        {tab === "connection" ? <ConnectionTab flow={f} /> : null}
        {tab === "timing" ? <TimingTab flow={f} /> : null}
        {tab === "comment" ? (
          <div>
            <textarea value={comment} onInput={(e) => setComment((e.target as HTMLTextAreaElement).value)} />
            <button onClick={() => act("PUT", `/flows/${f.id}`, { comment })}>Save comment</button>
          </div>
        ) : null}
      </div>
    </div>
  );
}

const EXPORTS: [string, string][] = [["curl", "curl"], ["httpie", "httpie"], ["raw_request", "raw request"], ["raw_response", "raw response"], ["raw", "raw"]];

function ExportBar(props: { flow: Flow }) {
  const [out, setOut] = useState<[string, string] | null>(null);
  useEffect(() => setOut(null), [props.flow.id]);
  if (props.flow.type !== "http") return null;
  const show = (f: string) => apiText(`/flows/${props.flow.id}/export/${f}`).then((t) => setOut([f, t])).catch(reportError);
  return (
    <div class="export">
      <div class="toolbar">
        <span class="muted">Export</span>
        {EXPORTS.map(([f, l]) => <button id={`export-${f}`} onClick={() => show(f)}>{l}</button>)}
        <a class="button" id="export-har" href={`/flows/${props.flow.id}/export/har`} download>HAR</a>
      </div>
      {out ? (
        <div>
          <div class="toolbar">
            <b>{out[0]}</b>
            <button onClick={() => navigator.clipboard?.writeText(out[1]).catch(reportError)}>Copy</button>
            <button onClick={() => setOut(null)}>Close</button>
          </div>
          <pre id="export-text" class="body">{out[1]}</pre>
        </div>
      ) : null}
    </div>
  );
}

/** An option's value as the editor's text box shows it. */
function optionText(o: OptionInfo): string {
  if (o.type === "sequence of str") return ((o.value as string[]) ?? []).join("\n");
  return o.value === null || o.value === undefined ? "" : String(o.value);
}

/** One option's control. A text value being typed is a draft held by the editor (not by
 * this row), shown instead of the option's value until it is committed (Enter, leaving the
 * box) or cancelled (Escape): an `options/update` re-rendering or remounting the row never
 * replaces what the user typed. */
function OptionInput(props: {
  o: OptionInfo;
  draft: string | undefined;
  setDraft: (d: string | undefined) => void;
  /** Sets the option; `sent` is the draft it came from, dropped once accepted. */
  set: (v: unknown, sent?: string) => void;
}) {
  const o = props.o;
  const seq = o.type === "sequence of str";
  const text = optionText(o);
  if (o.type === "bool") return <input type="checkbox" checked={!!o.value} onChange={(e) => props.set((e.target as HTMLInputElement).checked)} />;
  if (o.choices) return <select value={text} onChange={(e) => props.set((e.target as HTMLSelectElement).value)}>{o.choices.map((c) => <option value={c}>{c}</option>)}</select>;
  const t = props.draft ?? text;
  const commit = () => {
    if (props.draft === undefined) return;
    if (props.draft === text) return props.setDraft(undefined);
    if (seq) props.set(t.split("\n").map((l) => l.trim()).filter((l) => l), t);
    else if (o.type === "optional str" && t === "") props.set(null, t);
    else props.set(t, t);
  };
  const keys = (e: KeyboardEvent) => {
    if (e.key === "Enter" && !seq) commit();
    if (e.key === "Escape") props.setDraft(undefined);
  };
  const input = (e: Event) => props.setDraft((e.target as HTMLInputElement).value);
  return seq ? (
    <textarea rows={Math.max(1, t.split("\n").length)} value={t} onInput={input} onBlur={commit} onKeyDown={keys} />
  ) : (
    <input value={t} onInput={input} onBlur={commit} onKeyDown={keys} />
  );
}

function OptionsEditor(props: { close: () => void }) {
  const [q, setQ] = useState("");
  const [errors, setErrors] = useState<Record<string, string>>({});
  // Text being typed, per option name, until committed or cancelled.
  const [drafts, setDrafts] = useState<Record<string, string>>({});
  // `only`: drop the draft only while it is still that text (typing went on meanwhile).
  const setDraft = (name: string, d: string | undefined, only?: string) =>
    setDrafts((all) => {
      if (only !== undefined && all[name] !== only) return all;
      const next = { ...all };
      if (d === undefined) delete next[name];
      else next[name] = d;
      return next;
    });
  const names = Object.keys(store.options).sort().filter((n) => n.includes(q.trim()));
  const set = async (name: string, value: unknown, sent?: string) => {
    try {
      await api("PUT", "/options", { [name]: value });
      setErrors((e) => ({ ...e, [name]: "" }));
      // Accepted: show the value at once (the `options/update` that follows confirms it),
      // then let go of the draft.
      if (store.options[name]) store.options[name] = { ...store.options[name], value };
      if (sent !== undefined) setDraft(name, undefined, sent);
    } catch (e) {
      // Refused: the draft stays, beside the reason, to be corrected.
      setErrors((x) => ({ ...x, [name]: e instanceof ApiError ? e.message : String(e) }));
    }
  };
  return (
    <div class="options" id="options">
      <div class="toolbar">
        <b>Options</b>
        <input id="options-filter" placeholder="filter by name" value={q} onInput={(e) => setQ((e.target as HTMLInputElement).value)} />
        <span class="muted">changes apply at once, as --set would</span>
        <button onClick={props.close}>Close (Esc)</button>
      </div>
      <table class="headers">
        <tbody>
          {names.map((n) => {
            const o = store.options[n];
            return (
              <tr key={n} id={`opt-${n}`} data-value={optionText(o)}>
                <td class="hname">{n}</td>
                <td class="opt-value">
                  <OptionInput o={o} draft={drafts[n]} setDraft={(d) => setDraft(n, d)} set={(v, sent) => set(n, v, sent)} />
                  {errors[n] ? <div class="error" role="alert">{errors[n]}</div> : null}
                </td>
                <td class="muted">{o.type}, default {JSON.stringify(o.default)}. {o.help}</td>
              </tr>
            );
          })}
        </tbody>
      </table>
    </div>
  );
}

function FileMenu() {
  const input = useRef<HTMLInputElement>(null);
  const search = store.filters.search.expr.trim();
  const q = search ? `?filter=${encodeURIComponent(search)}` : "";
  const load = async (file: File | undefined) => {
    if (!file) return;
    const r = await act("POST", "/flows/dump", file);
    if (input.current) input.current.value = "";
    if (r) store.notify();
  };
  return (
    <span class="filemenu">
      <input type="file" id="open-file" ref={input} hidden onChange={(e) => load((e.target as HTMLInputElement).files?.[0])} />
      <button id="open" onClick={() => input.current?.click()}>Open…</button>
      <a class="button" id="save" href={`/flows/dump${q}`} download="flows" title={search ? "the flows the search matches" : "every flow"}>{search ? "Save filtered" : "Save"}</a>
      <a class="button" id="save-har" href={`/flows/har${q}`} download="flows.har">HAR</a>
    </span>
  );
}

function EventLog() {
  const ref = useRef<HTMLDivElement>(null);
  useEffect(() => {
    if (ref.current) ref.current.scrollTop = ref.current.scrollHeight;
  });
  return (
    <div class="eventlog" ref={ref}>
      {store.events.map((e) => <div class={`ev ev-${e.level}`}><span class="lvl">{e.level}</span> {e.message}</div>)}
    </div>
  );
}

// ---- the app ----------------------------------------------------------------------------

function App() {
  useStore();
  const [selected, setSelected] = useState<string | null>(null);
  const [tab, setTab] = useState("request");
  const [sort, setSort] = useState<[Col | null, boolean]>([null, false]);
  const [showLog, setShowLog] = useState(true);
  const [showOptions, setShowOptions] = useState(false);
  const [showRules, setShowRules] = useState(false);
  const search = store.filters.search;
  const highlight = store.filters.highlight;

  // Recomputed each render (at most one per animation frame): a few thousand rows.
  const flows = (() => {
    let v = store.order.map((id) => store.flows.get(id)!).filter((f) => f);
    if (search.ids) v = v.filter((f) => search.ids!.has(f.id));
    const [col, desc] = sort;
    if (col) {
      const key = COLS.find((c) => c.id === col)!.key!;
      v = [...v].sort((a, b) => {
        const x = key(a), y = key(b);
        const c = x < y ? -1 : x > y ? 1 : 0;
        return desc ? -c : c;
      });
    }
    return v;
  })();

  const sel = selected ? store.flows.get(selected) : undefined;

  useEffect(() => {
    const onKey = (e: KeyboardEvent) => {
      const t = e.target as HTMLElement;
      if (t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.tagName === "SELECT")) return;
      const i = flows.findIndex((f) => f.id === selected);
      const go = (j: number) => { const f = flows[Math.max(0, Math.min(flows.length - 1, j))]; if (f) setSelected(f.id); };
      switch (e.key) {
        case "j": case "ArrowDown": go(i + 1); break;
        case "k": case "ArrowUp": go(i < 0 ? flows.length - 1 : i - 1); break;
        case "Home": go(0); break;
        case "End": go(flows.length - 1); break;
        case "Escape": if (showRules) setShowRules(false); else if (showOptions) setShowOptions(false); else setSelected(null); break;
        case "b": setShowRules((s) => !s); break;
        case "o": setShowOptions((s) => !s); break;
        case "a": if (sel) act("POST", `/flows/${sel.id}/resume`); break;
        case "A": act("POST", "/flows/resume"); break;
        case "x": if (sel) act("POST", `/flows/${sel.id}/kill`); break;
        case "X": act("POST", "/flows/kill"); break;
        case "d": case "Delete": if (sel) { act("DELETE", `/flows/${sel.id}`); go(i + 1); } break;
        case "D": if (sel) act("POST", `/flows/${sel.id}/duplicate`); break;
        case "m": if (sel) act("PUT", `/flows/${sel.id}`, { marked: !sel.marked }); break;
        case "r": if (sel) act("POST", `/flows/${sel.id}/replay`); break;
        case "e": setShowLog((s) => !s); break;
        default: return;
      }
      e.preventDefault();
    };
    window.addEventListener("keydown", onKey);
    return () => window.removeEventListener("keydown", onKey);
  }, [flows, selected, sel, showOptions, showRules]);

  const [interceptError, setInterceptError] = useState<{ message: string; position: number } | null>(null);
  const setIntercept = async (expr: string) => {
    try {
      await api("PUT", "/options", { intercept: expr });
      setInterceptError(null);
      store.intercept = expr;
      store.notify();
    } catch (e) {
      if (e instanceof ApiError && e.body?.error?.position !== undefined) setInterceptError(e.body.error);
      else reportError(e);
    }
  };
  const intercepted = flows.filter((f) => f.intercepted).length;
  const live = flows.filter((f) => f.live).length;

  return (
    <div class={`app ${showLog ? "with-log" : ""}`}>
      <header>
        <span class="brand">waylay</span>
        <FilterInput id="search" label="Search" value={search.expr} error={search.error} onChange={(v) => store.sendFilter("search" as FilterName, v)} />
        <FilterInput id="highlight" label="Highlight" value={highlight.expr} error={highlight.error} onChange={(v) => store.sendFilter("highlight" as FilterName, v)} />
        <FilterInput id="intercept" label="Intercept" value={store.intercept} error={interceptError} onChange={setIntercept} />
        <button id="resume-all" disabled={!intercepted} onClick={() => act("POST", "/flows/resume")}>Resume all (A)</button>
        <button id="kill-all" disabled={!live} onClick={() => act("POST", "/flows/kill")}>Kill all (X)</button>
        <button id="clear" onClick={() => { if (confirm("Clear all flows?")) act("POST", "/clear"); }}>Clear</button>
        <FileMenu />
        <button id="options-button" onClick={() => setShowOptions((s) => !s)}>Options (o)</button>
        <button id="rules-button" onClick={() => setShowRules((s) => !s)}>Rules (b)</button>
        <button onClick={() => setShowLog((s) => !s)}>Events (e)</button>
        <span class={`status ${store.connected ? "ok" : "down"}`} id="conn">{store.connected ? `live · ${flows.length} flows` : "reconnecting…"}</span>
      </header>
      <main class={sel ? "split" : ""}>
        <FlowTable flows={flows} selected={selected} onSelect={setSelected} sort={sort} setSort={setSort} highlight={highlight.ids} />
        {sel ? <Detail flow={sel} tab={tab} setTab={setTab} /> : null}
      </main>
      {showLog ? <EventLog /> : null}
      {showOptions ? <OptionsEditor close={() => setShowOptions(false)} /> : null}
      {showRules ? <RulesPanel store={store} close={() => setShowRules(false)} /> : null}
    </div>
  );
}

store.connect();
const root = document.getElementById("app");
if (root) render(<App />, root);
