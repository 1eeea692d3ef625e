// #/models: the model registry, newest first, with cursor paging.

import { AuthRequired, apiJson, withQuery } from "./api.js";
import { errorBox, h, heading, madeBy, modelLink, replace, time } from "./dom.js";
import { CursorPager } from "./paging.js";

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
  const limit = Math.min(Math.max(Number(query.get("limit")) || 20, 1), 1000);
  let disposed = false;
  let inFlight = null;
  const pager = new CursorPager(() => load());
  const rows = h("tbody");
  const message = h("div", { class: "message" });

  async function load() {
    inFlight?.abort();
    const controller = new AbortController();
    inFlight = controller;
    try {
      const page = await apiJson(withQuery("/v1/models", { limit, cursor: pager.cursor }), {
        signal: controller.signal,
      });
      if (disposed || controller.signal.aborted) return;
      replace(
        rows,
        page.data.length
          ? page.data.map(row)
          : h("tr", {}, h("td", { colspan: 5, class: "muted" }, EMPTY)),
      );
      pager.update(page, page.data.length);
      message.replaceChildren();
      view.dataset.loaded = "true";
    } catch (error) {
      if (error.name === "AbortError" || error instanceof AuthRequired) return;
      replace(message, errorBox(error));
    }
  }

  replace(
    view,
    heading("Models"),
    message,
    h(
      "div",
      { class: "table-wrap" },
      h(
        "table",
        {},
        h("caption", { class: "visually-hidden" }, "Models, newest first"),
        h(
          "thead",
          {},
          h("tr", {}, COLUMNS.map((title) => h("th", { scope: "col" }, title))),
        ),
        rows,
      ),
    ),
    pager.nav,
  );
  load();

  return () => {
    disposed = true;
    inFlight?.abort();
  };
}
