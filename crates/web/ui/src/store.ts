// The page's state: the flows it knows (a snapshot plus numbered updates from the socket),
// filter matches, events, and a tiny subscribe/notify so components re-render.

import { Flow, Update, fetchFlows } from "./api";

export type FilterName = "search" | "highlight";
export interface FilterState {
  expr: string;
  error: { message: string; position: number } | null;
  ids: Set<string> | null;
}

export interface OptionInfo {
  type: string;
  default: unknown;
  value: unknown;
  help: string;
  choices: string[] | null;
}

export interface Event {
  id: string;
  level: string;
  message: string;
}

/** How many flows the page keeps (older ones stay on the server, in its store). */
export const KEEP = 5000;
/** The first page: small, so the list shows at once however many flows are stored; older
 * ones follow in the background, a page at a time, by keyset. */
const FIRST = 200;
const OLDER = 1000;

export class Store {
  flows = new Map<string, Flow>();
  order: string[] = [];
  filters: Record<FilterName, FilterState> = {
    search: { expr: "", error: null, ids: null },
    highlight: { expr: "", error: null, ids: null },
  };
  events: Event[] = [];
  connected = false;
  intercept = "";
  /** The proxy's options as `/options` lists them: {name: {type, default, value, help, choices}}. */
  options: Record<string, OptionInfo> = {};
  private seq = 0;
  private pending: Update[] | null = [];
  private listeners = new Set<() => void>();
  private ws: WebSocket | null = null;
  private scheduled = false;
  private generation = 0;

  subscribe(f: () => void): () => void {
    this.listeners.add(f);
    return () => this.listeners.delete(f);
  }

  notify() {
    if (this.scheduled) return;
    this.scheduled = true;
    requestAnimationFrame(() => {
      this.scheduled = false;
      for (const f of this.listeners) f();
    });
  }

  /** Opens the socket first, then fetches the snapshot: no update is lost in between. */
  connect() {
    const proto = location.protocol === "https:" ? "wss" : "ws";
    const ws = new WebSocket(`${proto}://${location.host}/updates`);
    this.ws = ws;
    this.pending = [];
    ws.onopen = () => {
      this.connected = true;
      this.resync();
    };
    ws.onmessage = (m) => {
      let batch: Update[];
      try {
        batch = JSON.parse(m.data);
      } catch {
        return;
      }
      for (const u of batch) {
        if (this.pending) this.pending.push(u);
        else this.apply(u);
      }
      this.notify();
    };
    ws.onclose = () => {
      this.connected = false;
      this.notify();
      setTimeout(() => this.connect(), 1000);
    };
  }

  async resync() {
    this.pending = this.pending ?? [];
    const gen = ++this.generation;
    try {
      const [{ flows, seq }, events, options] = await Promise.all([
        fetchFlows(FIRST),
        fetch("/events").then((r) => r.json()),
        fetch("/options").then((r) => r.json()),
      ]);
      this.flows.clear();
      for (const f of flows) this.flows.set(f.id, f);
      this.order = flows.map((f) => f.id);
      this.events = events;
      this.options = options ?? {};
      this.intercept = (options?.intercept?.value as string) ?? "";
      this.seq = seq;
      const pending = this.pending ?? [];
      this.pending = null;
      for (const u of pending) this.apply(u);
      for (const name of ["search", "highlight"] as FilterName[]) {
        if (this.filters[name].expr) this.sendFilter(name, this.filters[name].expr);
      }
      this.notify();
      if (flows.length === FIRST) this.loadOlder(flows[0].seq, gen);
    } catch (e) {
      this.pending = null;
      this.events.push({ id: "ui", level: "error", message: `could not load flows: ${e}` });
    }
    this.notify();
  }

  /** Prepends older flows, page by page, until the page holds KEEP (or there are no more). */
  private async loadOlder(before: number, gen: number) {
    while (gen === this.generation && this.order.length < KEEP) {
      const want = Math.min(OLDER, KEEP - this.order.length);
      let page: Flow[];
      try {
        page = (await fetchFlows(want, before)).flows;
      } catch {
        return;
      }
      if (gen !== this.generation || page.length === 0) return;
      const fresh = page.filter((f) => !this.flows.has(f.id));
      for (const f of fresh) this.flows.set(f.id, f);
      this.order = fresh.map((f) => f.id).concat(this.order);
      before = page[0].seq;
      this.notify();
      if (page.length < want) return;
    }
  }

  sendFilter(name: FilterName, expr: string) {
    this.filters[name].expr = expr;
    if (!expr.trim()) {
      this.filters[name] = { expr, error: null, ids: null };
    }
    this.ws?.send(JSON.stringify({ type: "flows/updateFilter", payload: { name, expr } }));
    this.notify();
  }

  private apply(u: Update) {
    if (u.type === "flows/reset") {
      this.pending = [];
      this.resync();
      return;
    }
    if (u.type === "flows/filterUpdate") {
      const p = u.payload;
      const f = this.filters[p.name as FilterName];
      if (!f || (p.expr !== undefined && p.expr !== f.expr)) return;
      if (p.error) f.error = p.error;
      else {
        f.error = null;
        f.ids = p.matching_flow_ids ? new Set(p.matching_flow_ids) : null;
      }
      return;
    }
    if (u.type === "hello") return;
    // Changes already in the snapshot are skipped.
    if (u.seq <= this.seq) return;
    this.seq = u.seq;
    switch (u.type) {
      case "flows/add":
      case "flows/update": {
        const f: Flow = u.payload.flow;
        if (!this.flows.has(f.id)) {
          this.order.push(f.id);
          if (this.order.length > KEEP) {
            const old = this.order.splice(0, this.order.length - KEEP);
            for (const id of old) this.flows.delete(id);
          }
        }
        this.flows.set(f.id, f);
        const m = u.payload.matching_filters ?? {};
        for (const name of ["search", "highlight"] as FilterName[]) {
          const ids = this.filters[name].ids;
          if (ids && name in m) {
            if (m[name]) ids.add(f.id);
            else ids.delete(f.id);
          }
        }
        break;
      }
      case "flows/remove":
        this.flows.delete(u.payload);
        this.order = this.order.filter((id) => id !== u.payload);
        break;
      case "events/add":
        this.events.push(u.payload);
        if (this.events.length > 1000) this.events.splice(0, this.events.length - 1000);
        break;
      case "options/update":
        for (const [k, v] of Object.entries(u.payload ?? {})) this.options[k] = { ...this.options[k], ...(v as OptionInfo) };
        if (u.payload?.intercept) this.intercept = u.payload.intercept.value ?? "";
        break;
    }
  }
}
