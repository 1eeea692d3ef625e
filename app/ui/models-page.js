// #/models: the model registry, newest first, with cursor paging.

import { h, madeBy, modelLink, time } from "./dom.js";
import { renderPagedList } from "./paging.js";

const COLUMNS = ["Model", "Architecture", "Task", "Made by", "Created"];
const EMPTY = "No models yet: a job that succeeds makes one.";

function row(model) {
  return h(
    "tr",
    { dataset: { modelId: model.id } },
    h(
      "td",
      {},
      modelLink(model.id, model.name || model.id),
      model.name ? h("div", { class: "muted small mono" }, model.id) : null,
    ),
    h("td", {}, model.architecture),
    h("td", {}, model.task),
    h("td", {}, madeBy(model)),
    h("td", {}, time(model.created_at)),
  );
}

export function render(view, _params, query) {
  return renderPagedList(view, query, {
    title: "Models",
    path: "/v1/models",
    columns: COLUMNS,
    row,
    empty: EMPTY,
  });
}
