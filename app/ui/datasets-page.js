// #/datasets: the tenant's uploaded datasets, newest first, with cursor paging, and the way to
// upload another.

import { h, number, time } from "./dom.js";
import { renderPagedList } from "./paging.js";

const COLUMNS = ["Dataset", "Task", "Modality", "Examples", "Uploaded"];
const EMPTY = "No datasets uploaded yet: the built-in ones (builtin:digits, …) need none.";

function datasetLink(id, text = id) {
  return h("a", { href: `#/datasets/${encodeURIComponent(id)}` }, text);
}

function row(dataset) {
  return h(
    "tr",
    { dataset: { datasetId: dataset.id } },
    h("td", {}, datasetLink(dataset.id, dataset.name), h("div", { class: "muted small mono" }, dataset.id)),
    h("td", {}, dataset.task),
    h("td", {}, dataset.modality),
    h("td", { class: "num" }, number(dataset.num_examples)),
    h("td", {}, time(dataset.created_at)),
  );
}

export function render(view, _params, query) {
  return renderPagedList(view, query, {
    title: "Datasets",
    path: "/v1/datasets",
    columns: COLUMNS,
    row,
    empty: EMPTY,
    actions: h("a", { class: "button", href: "#/datasets/upload", id: "upload-dataset" }, "Upload a dataset"),
  });
}
