// A model's lineage as a left-to-right chain of boxes: the first pretrained base, each model
// made from it, and this model last. An ordered list laid out with flexbox; arrows are CSS.

import { h, madeBy } from "./dom.js";

function box(model, { current = false } = {}) {
  const name = model.name || model.id;
  const label = model.deleted
    ? h("span", { class: "lineage-name" }, name, " (deleted)")
    : current
      ? h("span", { class: "lineage-name" }, name)
      : h("a", { class: "lineage-name", href: `#/models/${encodeURIComponent(model.id)}` }, name);
  return h(
    "li",
    {
      class: `lineage-box${current ? " current" : ""}${model.deleted ? " deleted" : ""}`,
      "aria-current": current ? "page" : null,
      dataset: { modelId: model.id, kind: model.kind ?? "imported" },
    },
    label,
    h("span", { class: "lineage-how" }, madeBy(model)),
    model.name ? h("span", { class: "lineage-id mono" }, model.id) : null,
  );
}

/** The chain for a ModelOut: its `lineage` (ancestors, the first base first), then itself. */
export function lineageChain(model) {
  return h(
    "nav",
    { "aria-label": "Lineage", class: "lineage-wrap" },
    h(
      "ol",
      { class: "lineage", id: "lineage" },
      model.lineage.map((ancestor) => box(ancestor)),
      box(model, { current: true }),
    ),
  );
}
