// #/models/{id}: one model. Name, architecture, metrics, a summary of its card, its lineage,
// the models made from it, downloads of each format it has (fetched with the key), and a
// panel to predict with it where its task has a renderer of the answer (predictions.js).

import { AuthRequired, apiJson, download, withQuery } from "./api.js";
import {
  bytes,
  card,
  errorBox,
  facts,
  h,
  heading,
  jobLink,
  madeBy,
  metricsTable,
  modelLink,
  replace,
  time,
} from "./dom.js";
import { lineageChain } from "./lineage.js";
import { RENDERERS, exampleInputs, inputShown } from "./predictions.js";

/** The formats GET /v1/models/{id}/download serves for this model (app/services/exports.py). */
export function formatsOf(model) {
  const formats = [
    { format: "safetensors", label: "Weights (safetensors)", file: `${model.id}.safetensors` },
  ];
  // Every task that predicts (has a renderer) exports its predict graph.
  if (RENDERERS[model.task]) {
    formats.push({ format: "onnx", label: "ONNX", file: `${model.id}.onnx` });
    formats.push({ format: "archive", label: "Archive (zip with serve.py)", file: `${model.id}.zip` });
  }
  if (model.architecture === "hf_encoder" || model.architecture === "hf_causal_lm") {
    formats.push({ format: "hf", label: "Hugging Face directory (zip)", file: `${model.id}-hf.zip` });
  }
  return formats;
}

function list(values, empty = "—") {
  if (!values || values.length === 0) return empty;
  const shown = values.slice(0, 20).join(", ");
  return values.length > 20 ? `${shown}, … (${values.length})` : shown;
}

/** A table column as predict takes it: its name, and a categorical column's values. */
function columnShown(column) {
  return column.categories ? `${column.name} (${column.categories.join(" | ")})` : column.name;
}

function datasets(model) {
  const entries = Object.entries(model.datasets ?? {});
  if (entries.length === 0) return "—";
  return h(
    "ul",
    { class: "plain" },
    entries.map(([name, sha]) =>
      h(
        "li",
        {},
        h("span", { class: "mono" }, name),
        " ",
        h("span", { class: "muted" }, sha ? `sha256 ${sha.slice(0, 12)}…` : "built-in"),
      ),
    ),
  );
}

function downloads(model) {
  const status = h("p", { class: "download-status", role: "status" });
  const buttons = formatsOf(model).map(({ format, label, file }) =>
    h(
      "button",
      {
        type: "button",
        dataset: { format },
        onclick: async (event) => {
          const button = event.currentTarget;
          button.disabled = true;
          status.textContent = `Preparing ${label}…`;
          try {
            const path = withQuery(`/v1/models/${encodeURIComponent(model.id)}/download`, { format });
            const saved = await download(path, file);
            status.textContent = `Saved ${saved.filename} (${bytes(saved.size)}).`;
          } catch (error) {
            if (error instanceof AuthRequired) return;
            replace(status, errorBox(error));
          } finally {
            button.disabled = false;
          }
        },
      },
      `Download ${label}`,
    ),
  );
  return [h("div", { class: "downloads" }, buttons), status];
}

/** The textarea's inputs as an array, or an Error saying why they are not one. */
function parsedInputs(text) {
  let inputs;
  try {
    inputs = JSON.parse(text);
  } catch (error) {
    return new Error(`The inputs are not valid JSON: ${error.message}`);
  }
  if (!Array.isArray(inputs) || inputs.length === 0) {
    return new Error("The inputs must be a JSON array with one entry per input.");
  }
  return inputs;
}

/** A textarea of inputs, a Predict button, and the answer drawn by `renderAnswer`. */
function predictPanel(model, renderAnswer) {
  const example = exampleInputs(model);
  const inputs = h(
    "textarea",
    {
      id: "predict-inputs",
      rows: example.split("\n").length > 3 ? 8 : 3,
      spellcheck: "false",
      "aria-describedby": "predict-hint",
      placeholder: example ? null : `[${inputShown(model)}, …]`,
    },
    example,
  );
  const answer = h("div", { class: "predict-answer", "aria-live": "polite" });
  const predict = async (event) => {
    const button = event.currentTarget;
    const batch = parsedInputs(inputs.value);
    if (batch instanceof Error) {
      replace(answer, errorBox(batch));
      return;
    }
    button.disabled = true;
    replace(answer, h("p", { class: "muted" }, "Predicting…"));
    try {
      const path = `/v1/models/${encodeURIComponent(model.id)}/predict`;
      const response = await apiJson(path, { method: "POST", json: { inputs: batch } });
      replace(answer, renderAnswer(response, model));
    } catch (error) {
      replace(answer, error instanceof AuthRequired ? null : errorBox(error));
    } finally {
      button.disabled = false;
    }
  };
  return [
    h("label", { for: "predict-inputs" }, "Inputs (a JSON array)"),
    h("p", { class: "hint", id: "predict-hint" }, `Each input: ${inputShown(model)}.`),
    inputs,
    h("div", { class: "predict-actions" }, h("button", { type: "button", onclick: predict }, "Predict")),
    answer,
  ];
}

async function children(model, into) {
  try {
    const page = await apiJson(withQuery("/v1/models", { parent_id: model.id, limit: 100 }));
    replace(
      into,
      page.data.length
        ? h(
            "ul",
            { class: "plain" },
            page.data.map((child) =>
              h(
                "li",
                {},
                modelLink(child.id, child.name || child.id),
                " ",
                h("span", { class: "muted" }, madeBy(child)),
              ),
            ),
          )
        : h("p", { class: "muted" }, "No model has been made from this one yet."),
    );
  } catch (error) {
    if (!(error instanceof AuthRequired)) replace(into, errorBox(error));
  }
}

export function render(view, { id }) {
  let disposed = false;
  const message = h("div", { class: "message" });
  const back = () => h("p", { class: "breadcrumb" }, h("a", { href: "#/models" }, "← Models"));
  replace(view, back(), heading(id), message);

  (async () => {
    let model;
    try {
      model = await apiJson(`/v1/models/${encodeURIComponent(id)}`);
    } catch (error) {
      if (!disposed && !(error instanceof AuthRequired)) replace(message, errorBox(error));
      return;
    }
    if (disposed) return;
    document.title = `${model.name || model.id} · models · tunery`;
    const renderAnswer = RENDERERS[model.task];
    const made = h("div", {}, h("p", { class: "muted" }, "Loading…"));
    replace(
      view,
      back(),
      heading(model.name || model.id),
      h(
        "p",
        { class: "subtitle" },
        `${model.architecture} · ${model.task}`,
        model.tags.length ? ` · tags: ${model.tags.join(", ")}` : "",
      ),
      message,
      card(
        "h-lineage",
        "Lineage",
        { wide: true },
        model.lineage.length === 0
          ? h("p", { class: "muted" }, "Trained from scratch or imported: no ancestors.")
          : null,
        lineageChain(model),
        h("h3", {}, "Made from this model"),
        made,
      ),
      renderAnswer && card("h-predict", "Predict", { wide: true }, predictPanel(model, renderAnswer)),
      card("h-download", "Download", { wide: true }, downloads(model)),
      card(
        "h-card",
        "Model card",
        {},
        facts([
          ["Id", h("span", { class: "mono" }, model.id)],
          ["Architecture", model.architecture],
          ["Params", h("code", {}, JSON.stringify(model.params))],
          ["Task", model.task],
          ["Made by", madeBy(model)],
          ["Input shape", model.input_shape.length ? `[${model.input_shape.join(", ")}]` : "text"],
          ["Labels", list(model.labels)],
          ["Targets", model.targets && model.targets.length ? list(model.targets) : null],
          ["Thresholds", model.thresholds ? list(model.thresholds) : null],
          ["Columns", model.columns ? list(model.columns.map(columnShown)) : null],
          ["Features", model.feature_names ? list(model.feature_names) : null],
          ["Datasets", datasets(model)],
          ["Source job", jobLink(model.source_job_id)],
          ["Parent", modelLink(model.parent_model_id)],
          ["Created", time(model.created_at)],
          ["Size", bytes(model.size_bytes)],
          ["sha256", h("span", { class: "mono small" }, model.sha256)],
        ]),
      ),
      card("h-metrics", "Metrics", {}, metricsTable(model.metrics, "Model metrics")),
      model.spec &&
        card(
          "h-spec",
          "Spec of the job that made it",
          { wide: true },
          h(
            "details",
            {},
            h("summary", {}, "Spec"),
            h("pre", { class: "spec" }, JSON.stringify(model.spec, null, 2)),
          ),
        ),
    );
    view.dataset.loaded = "true";
    children(model, made);
  })();

  return () => {
    disposed = true;
  };
}
