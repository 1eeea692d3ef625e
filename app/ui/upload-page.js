// #/datasets/upload: a file and its settings, sent to POST /v1/datasets (multipart), with the
// form built from that body's schema in /openapi.json (the tasks it takes, the label column's
// default, what each field means). The API checks the whole file before it keeps it: a problem
// (a column missing, a label that is not one, a file too large) is shown beside the field it
// names; a dataset it keeps opens on its report page.

import { AuthRequired, ApiError, apiJson, openApiDocument } from "./api.js";
import { card, errorBox, h, heading, replace } from "./dom.js";
import { binding } from "./schema.js";
import { SchemaForm } from "./spec-form.js";

const UPLOAD = "/v1/datasets";

function uploadSchema(openapi) {
  return openapi.paths[UPLOAD].post.requestBody.content["multipart/form-data"].schema;
}

/** The form's values as multipart form data: the file with its name, the rest as text. */
function formData(values) {
  const data = new FormData();
  for (const [name, value] of Object.entries(values)) {
    if (value !== undefined) data.append(name, value instanceof Blob ? value : String(value));
  }
  return data;
}

export function render(view) {
  document.title = "Upload a dataset · tunery";
  let disposed = false;
  let values = {};
  let form = null;
  const message = h("div", { class: "message" });
  const fields = h("div", { class: "spec-form", id: "upload-fields" });
  // Enabled once the form is drawn.
  const submit = h("button", { type: "submit", id: "upload-submit", disabled: true }, "Upload and check");
  const state = h("p", { class: "hint", role: "status", id: "upload-state" });

  /** A file chosen while the name is empty names the dataset after it. */
  function nameAfterFile() {
    const name = form.fields.get("name")?.control;
    if (values.file && !values.name && name) {
      values.name = values.file.name.replace(/\.[^.]+$/, "") || values.file.name;
      name.value = values.name;
    }
  }

  async function upload(event) {
    event.preventDefault();
    form.clearErrors();
    message.replaceChildren();
    if (!values.file) {
      form.showErrors([{ field: "file", message: "choose a file to upload" }]).placed?.focus();
      return;
    }
    submit.disabled = true;
    state.textContent = `Uploading ${values.file.name} and checking every example…`;
    try {
      const dataset = await apiJson(UPLOAD, { method: "POST", body: formData(values) });
      if (!disposed) location.hash = `#/datasets/${encodeURIComponent(dataset.id)}`;
    } catch (error) {
      if (disposed || error instanceof AuthRequired) return;
      state.textContent = "";
      const { placed, unplaced } =
        error instanceof ApiError ? form.showErrors(error.errors) : { placed: null, unplaced: [] };
      replace(
        message,
        h(
          "div",
          { class: "error", role: "alert" },
          error.describe?.() ?? String(error),
          unplaced.length ? h("ul", {}, unplaced.map((e) => h("li", {}, `${e.field}: ${e.message}`))) : null,
        ),
      );
      placed?.focus();
    } finally {
      submit.disabled = false;
    }
  }

  replace(
    view,
    h("p", { class: "breadcrumb" }, h("a", { href: "#/datasets" }, "← Datasets")),
    heading("Upload a dataset"),
    h(
      "p",
      { class: "subtitle" },
      "A .csv, .parquet, .jsonl, .npz or .zip (images, clips) file. It is checked whole before it is kept; ",
      "its report shows what was read. See docs/DATASETS.md for each format.",
    ),
    message,
    h(
      "form",
      {
        class: "create",
        id: "upload-form",
        novalidate: true,
        onsubmit: upload,
        "aria-labelledby": "h-upload",
      },
      card("h-upload", "File and settings", {}, fields, h("div", { class: "form-actions" }, submit, state)),
    ),
  );

  (async () => {
    let openapi;
    try {
      openapi = await openApiDocument();
    } catch (error) {
      if (!disposed) replace(message, errorBox(error));
      return;
    }
    if (disposed) return;
    form = new SchemaForm({
      root: openapi,
      order: ["file", "name", "task", "label_column"],
      onChange: nameAfterFile,
      rerender: () => {},
    });
    const bound = binding(
      () => values,
      (value) => {
        values = value ?? {};
      },
    );
    const node = uploadSchema(openapi);
    replace(fields, form.field({ name: "dataset", node, bound, path: "", required: true }));
    submit.disabled = false;
    view.dataset.loaded = "true";
  })();

  return () => {
    disposed = true;
  };
}
