// The breakpoint rules panel: the `breakpoints` option as a list (enable/disable, delete) and
// a form that writes a rule in the option's syntax:
//   [#]SEP filter SEP phase SEP action [SEP edit]...
// Errors come from the server with the rule's index and a position in it.

import { useState } from "preact/hooks";
import { ApiError, Flow, api } from "./api";
import { Store } from "./store";

const SEPARATORS = ["|", "/", ";", "!", "%", "^", "`"];

/** The rules as the `breakpoints` option holds them. */
function rulesOf(store: Store): string[] {
  const v = store.options["breakpoints"]?.value;
  return Array.isArray(v) ? (v as string[]) : [];
}

/** The rule the form describes, with a separator none of its parts contains. */
export function composeRule(filter: string, phase: string, action: string, edits: string[]): string | null {
  const parts = [filter, ...edits];
  const sep = SEPARATORS.find((s) => parts.every((p) => !p.includes(s)));
  if (!sep) return null;
  return [filter, phase, action, ...edits].map((p) => sep + p).join("");
}

interface RuleError {
  message: string;
  position?: number;
  index?: number;
}

export function RulesPanel(props: { store: Store; close: () => void }) {
  const rules = rulesOf(props.store);
  const [filter, setFilter] = useState("");
  const [phase, setPhase] = useState("request");
  const [action, setAction] = useState("resume");
  const [edits, setEdits] = useState("");
  const [error, setError] = useState<RuleError | null>(null);

  const save = async (next: string[]): Promise<boolean> => {
    try {
      await api("PUT", "/options", { breakpoints: next });
      setError(null);
      return true;
    } catch (e) {
      if (e instanceof ApiError && e.body?.error) setError(e.body.error);
      else setError({ message: String(e) });
      return false;
    }
  };
  const toggle = (i: number) =>
    save(rules.map((r, j) => (j !== i ? r : r.startsWith("#") ? r.slice(1) : `#${r}`)));
  const remove = (i: number) => save(rules.filter((_, j) => j !== i));
  const add = async () => {
    const list = edits.split("\n").map((l) => l.trim()).filter((l) => l);
    const rule = composeRule(filter.trim(), phase, action, list);
    if (!rule) {
      setError({ message: `every separator (${SEPARATORS.join(" ")}) appears in the rule: write it in the options editor` });
      return;
    }
    if (await save([...rules, rule])) {
      setFilter("");
      setEdits("");
    }
  };
  const shown = (i: number) => (error && error.index === i ? error : null);

  return (
    <div class="options rules" id="rules">
      <div class="toolbar">
        <b>Breakpoint rules</b>
        <span class="muted">a rule edits the flows its filter matches, then resumes or holds them</span>
        <button onClick={props.close}>Close (Esc)</button>
      </div>
      <table class="headers">
        <tbody>
          {rules.length === 0 ? (
            <tr><td class="muted">No rules yet.</td></tr>
          ) : (
            rules.map((r, i) => {
              const on = !r.startsWith("#");
              const e = shown(i);
              return (
                <tr key={r + i} class={on ? "" : "muted"} id={`rule-${i}`}>
                  <td><input type="checkbox" id={`rule-enabled-${i}`} title="enabled" checked={on} onChange={() => toggle(i)} /></td>
                  <td><code class="rule-text">{r}</code>{e ? <div class="error" role="alert">{e.message} (at {e.position})</div> : null}</td>
                  <td><button id={`rule-delete-${i}`} onClick={() => remove(i)}>Delete</button></td>
                </tr>
              );
            })
          )}
        </tbody>
      </table>
      <div class="toolbar rule-form">
        <input id="rule-filter" placeholder="filter (empty: every flow), e.g. ~d example.com & ~q" value={filter} onInput={(e) => setFilter((e.target as HTMLInputElement).value)} />
        <select id="rule-phase" value={phase} onChange={(e) => setPhase((e.target as HTMLSelectElement).value)}>
          <option value="request">request</option>
          <option value="response">response</option>
        </select>
        <select id="rule-action" value={action} onChange={(e) => setAction((e.target as HTMLSelectElement).value)}>
          <option value="resume">edit and resume</option>
          <option value="hold">edit and hold</option>
        </select>
      </div>
      <textarea id="rule-edits" rows={4} placeholder={"one edit a line:\nheader:X-Name=value\nremove-header:Cookie\nbody:new body\nstatus:404 (response)\nmethod:PUT / url:http://host/path (request)"} value={edits} onInput={(e) => setEdits((e.target as HTMLTextAreaElement).value)} />
      <div class="toolbar">
        <button id="rule-add" onClick={add}>Add rule</button>
        {error && error.index === undefined ? <span class="error" role="alert" id="rule-error">{error.message}</span> : null}
        {error && error.index !== undefined && error.index >= rules.length ? <span class="error" role="alert" id="rule-error">{error.message} (at position {error.position})</span> : null}
      </div>
    </div>
  );
}

/** Which breakpoint rules edited `flow`, if any (shown above its tabs). */
export function RuleNote(props: { flow: Flow }) {
  const r = props.flow.breakpoint_rule;
  if (!r || (!r.request && !r.response)) return null;
  return (
    <div class="muted rule-note" id="rule-note">
      {r.request ? <div>request edited by breakpoint rule <code>{r.request}</code></div> : null}
      {r.response ? <div>response edited by breakpoint rule <code>{r.response}</code></div> : null}
    </div>
  );
}
