// Building elements and formatting values. Text always goes in as text nodes, never as HTML:
// nothing the API returns can become markup.

/**
 * h("a", {href: "#/jobs", class: "x"}, "text", child) -> an element.
 * Attributes: `class`, `dataset` (an object), `on<event>` (a listener), booleans (present when
 * true), everything else with setAttribute. Children: nodes, strings, numbers, arrays; null and
 * false are skipped.
 */
export function h(tag, attributes = {}, ...children) {
  return build(document.createElement(tag), attributes, children);
}

/** h() for SVG elements (which need their namespace): the same attributes and children. */
export function svg(tag, attributes = {}, ...children) {
  return build(document.createElementNS("http://www.w3.org/2000/svg", tag), attributes, children);
}

function build(element, attributes, children) {
  for (const [name, value] of Object.entries(attributes ?? {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "dataset") Object.assign(element.dataset, value);
    else if (name.startsWith("on") && typeof value === "function") {
      element.addEventListener(name.slice(2), value);
    } else if (value === true) element.setAttribute(name, "");
    else element.setAttribute(name, String(value));
  }
  append(element, children);
  return element;
}

function append(element, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(element, child);
    else element.append(child instanceof Node ? child : String(child));
  }
}

/** Replaces everything inside `element` with `children`. */
export function replace(element, ...children) {
  element.replaceChildren();
  append(element, children);
  return element;
}

/** A <time> showing a local date and time, the ISO value in `datetime`. */
export function time(iso) {
  if (!iso) return h("span", { class: "muted" }, "—");
  const date = new Date(iso);
  return h("time", { datetime: iso, title: iso }, date.toLocaleString());
}

export function number(value) {
  if (typeof value !== "number" || !Number.isFinite(value)) return String(value);
  if (Number.isInteger(value)) return value.toLocaleString();
  return Math.abs(value) >= 1000 ? value.toFixed(1) : value.toPrecision(4);
}

export function bytes(size) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = size;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${unit === 0 ? value : value.toFixed(1)} ${units[unit]}`;
}

/** A status as a badge: the word itself, coloured by class (colour is never the only cue). */
export function statusBadge(status) {
  return h("span", { class: `badge status-${status}`, dataset: { status } }, status);
}

/** A job's progress: a <progress> bar (when the total is known) and "epoch e · step s / t". */
export function progress(job) {
  const { step, epoch, total_steps: total } = job.progress;
  const done = job.status === "succeeded";
  const label = `epoch ${epoch} · step ${step}${total ? ` / ${total}` : ""}`;
  const bar = total
    ? h("progress", { max: total, value: done ? total : Math.min(step, total) })
    : null;
  return h("span", { class: "progress" }, bar, h("span", { class: "progress-text" }, label));
}

/** A definition list from [term, description] pairs; pairs with a null description are left out. */
export function facts(pairs) {
  return h(
    "dl",
    { class: "facts" },
    pairs
      .filter(([, value]) => value !== null && value !== undefined)
      .map(([term, value]) => h("div", {}, h("dt", {}, term), h("dd", {}, value))),
  );
}

/** A two-column table of a metrics object, names sorted. */
export function metricsTable(metrics, caption, empty = "No metrics.") {
  const names = Object.keys(metrics ?? {}).sort();
  if (names.length === 0) return h("p", { class: "muted" }, empty);
  return h(
    "table",
    { class: "metrics" },
    h("caption", { class: "visually-hidden" }, caption),
    h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Metric"), h("th", { scope: "col" }, "Value"))),
    h(
      "tbody",
      {},
      names.map((name) =>
        h("tr", {}, h("th", { scope: "row" }, name), h("td", { class: "num" }, number(metrics[name]))),
      ),
    ),
  );
}

/** An alert paragraph for an error (an ApiError's description or any Error's message). */
export function errorBox(error) {
  return h("div", { class: "error", role: "alert" }, error?.describe?.() ?? String(error?.message ?? error));
}

/** The page heading, focusable so that navigation can move focus to it. */
export function heading(text, ...after) {
  return h("h1", { tabindex: "-1" }, text, ...after);
}

/** A card: a <section> titled by its <h2>; `wide` spans the whole row. */
export function card(id, title, { wide = false } = {}, ...children) {
  return h(
    "section",
    { "aria-labelledby": id, class: wide ? "card wide" : "card" },
    h("h2", { id }, title),
    ...children,
  );
}

/** How a model (or lineage ancestor) was made: "finetune · supervised", or "imported". */
export function madeBy(model) {
  if (!model.kind) return "imported";
  return model.method ? `${model.kind} · ${model.method}` : model.kind;
}

export function modelLink(id, text = id) {
  return id ? h("a", { href: `#/models/${encodeURIComponent(id)}` }, text) : null;
}

export function jobLink(id, text = id) {
  return id ? h("a", { href: `#/jobs/${encodeURIComponent(id)}` }, text) : null;
}

export function sweepLink(id, text = id) {
  return id ? h("a", { href: `#/sweeps/${encodeURIComponent(id)}` }, text) : null;
}
