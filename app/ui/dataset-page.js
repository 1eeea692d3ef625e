// #/datasets/{id}: a dataset's report, as the API read it when it was uploaded: its task and
// modality, the examples of each split, the examples of each class (with each one's share, so
// that a class too small to learn shows), the targets, columns, series or token counts it has,
// and a preview of its first examples; a link to train on it.

import { apiJson } from "./api.js";
import { bytes, card, errorBox, facts, h, heading, number, replace, time } from "./dom.js";

const SPLITS = ["train", "validation", "test"];
const PREVIEW_COUNT = 5;

function list(values) {
  return values?.length ? values.join(", ") : null;
}

function countTable(id, counts, caption, nameHeader) {
  const total = Object.values(counts).reduce((sum, count) => sum + count, 0);
  return h(
    "table",
    { class: "counts", id },
    h("caption", { class: "visually-hidden" }, caption),
    h(
      "thead",
      {},
      h("tr", {}, [nameHeader, "Examples", "Share"].map((text) => h("th", { scope: "col" }, text))),
    ),
    h(
      "tbody",
      {},
      Object.entries(counts).map(([name, count]) =>
        h(
          "tr",
          { dataset: { name } },
          h("th", { scope: "row" }, name),
          h("td", { class: "num" }, number(count)),
          h(
            "td",
            { class: "share" },
            h("meter", { min: 0, max: 1, value: total ? count / total : 0, "aria-hidden": "true" }),
            ` ${total ? ((100 * count) / total).toFixed(1) : "0.0"} %`,
          ),
        ),
      ),
    ),
  );
}

function summary(dataset) {
  const series = dataset.series;
  const tokens = dataset.token_counts;
  return facts([
    ["Id", h("span", { class: "mono" }, dataset.id)],
    ["Task", h("span", { id: "dataset-task" }, dataset.task)],
    ["Modality", dataset.modality],
    ["Format", dataset.format],
    ["Examples", h("span", { id: "dataset-examples" }, number(dataset.num_examples))],
    ["Input shape", dataset.input_shape.length ? `[${dataset.input_shape.join(", ")}]` : null],
    ["Label column", dataset.label_column],
    ["Labels", list(dataset.labels)],
    ["Targets", list(dataset.targets)],
    ["Features", list(dataset.feature_names)],
    [
      "Series",
      series &&
        `time column ${series.time_column} · season ${series.season} · ` +
          `context ${series.context_length} · horizon ${series.horizon}`,
    ],
    [
      "Tokens",
      tokens &&
        `${number(tokens.tokens)} under ${tokens.tokenizer}; ` +
          `longest example ${number(tokens.longest_example)}`,
    ],
    ["Size", bytes(dataset.size_bytes)],
    ["sha256", h("span", { class: "mono small" }, dataset.sha256)],
    ["Uploaded", time(dataset.created_at)],
  ]);
}

function splits(dataset) {
  const others = Object.keys(dataset.splits).filter((s) => !SPLITS.includes(s));
  const names = [...SPLITS.filter((s) => s in dataset.splits), ...others];
  const counts = Object.fromEntries(names.map((s) => [s, dataset.splits[s]]));
  return countTable("dataset-splits", counts, "Examples by split", "Split");
}

function preview(answer) {
  if (answer.images?.length) {
    return h(
      "ul",
      { class: "preview-images" },
      answer.images.map((image) =>
        h(
          "li",
          {},
          h("img", {
            src: `data:image/png;base64,${image.png_base64}`,
            alt: image.label ? `An example of ${image.label}` : "An example",
          }),
          h("span", {}, image.label ?? ""),
        ),
      ),
    );
  }
  const rows = answer.rows ?? [];
  if (!rows.length) return h("p", { class: "muted" }, "Nothing to preview.");
  const columns = [...new Set(rows.flatMap((row) => Object.keys(row)))];
  const cell = (value) => (typeof value === "string" ? value : JSON.stringify(value));
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      { class: "preview", id: "dataset-preview" },
      h("caption", { class: "visually-hidden" }, "The first examples"),
      h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, rows.map((row) => h("tr", {}, columns.map((c) => h("td", {}, cell(row[c])))))),
    ),
  );
}

export function render(view, { id }) {
  const path = `/v1/datasets/${encodeURIComponent(id)}`;
  const message = h("div", { class: "message" });
  const title = heading(id);
  const previewArea = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  let disposed = false;
  const breadcrumb = () => h("p", { class: "breadcrumb" }, h("a", { href: "#/datasets" }, "← Datasets"));
  replace(view, breadcrumb(), title, message);

  (async () => {
    let dataset;
    try {
      dataset = await apiJson(path);
    } catch (error) {
      if (!disposed) replace(message, errorBox(error));
      return;
    }
    if (disposed) return;
    title.textContent = dataset.name;
    document.title = `${dataset.name} · datasets · tunery`;
    const roles =
      dataset.role_counts &&
      card("h-roles", "By role", {}, countTable("dataset-roles", dataset.role_counts, "Messages by role", "Role"));
    const classes = Object.keys(dataset.class_counts).length
      ? countTable("dataset-classes", dataset.class_counts, "Examples by class", "Class")
      : h("p", { class: "muted" }, "No classes: this task has none.");
    replace(
      view,
      breadcrumb(),
      title,
      h(
        "p",
        { class: "subtitle" },
        "Checked whole and kept. ",
        h(
          "a",
          { href: `#/jobs/new?dataset=${encodeURIComponent(dataset.id)}`, id: "train-on-it" },
          "Train a model on it →",
        ),
      ),
      message,
      card("h-report", "Report", {}, summary(dataset)),
      card("h-splits", "Splits", {}, splits(dataset)),
      card("h-classes", "Classes", {}, classes),
      roles,
      card("h-preview", "The first examples", { wide: true }, previewArea),
    );
    view.dataset.loaded = "true";
    try {
      const answer = await apiJson(`${path}/preview?count=${PREVIEW_COUNT}`);
      if (!disposed) replace(previewArea, preview(answer));
    } catch (error) {
      if (!disposed) replace(previewArea, errorBox(error));
    }
  })();

  return () => {
    disposed = true;
  };
}
