// #/jobs/new and #/sweeps/new: a job or a sweep made from a form built from its request body's
// JSON Schema (/openapi.json) and the spec catalog (GET /v1/spec-catalog: the architectures and
// methods, and their params). Beside it the spec as JSON, kept in step both ways: the way to
// anything the form does not show. The API's 422 is put beside the fields it names.
// `?job=ID` starts from that job's spec (Clone; with `&checkpoint=ID`, from that checkpoint of
// it: `base_checkpoint_id`), `?sweep=ID` from a sweep's, `?dataset=ID` with that dataset to
// train on.

import { AuthRequired, ApiError, apiJson, openApiDocument, withQuery } from "./api.js";
import { card, errorBox, h, heading, jobLink, replace, sweepLink } from "./dom.js";
import { methodField, modelField } from "./registry-fields.js";
import { binding, isObject } from "./schema.js";
import { SchemaForm } from "./spec-form.js";

// Suggestions for the fields that name a dataset or a model, and a sweep's parameter paths.
const LISTS = { dataset: "datasets-list", base_model_id: "models-list", parameters: "paths-list" };
// The job fields a sweep's parameter may search: those with a value to draw (not the data's).
const SEARCHABLE = /^job\.(hyperparameters|model\.params|method\.params)\./;
// Shown first, where a form has them; the rest follow in the schema's order.
const ORDER = ["kind", "name", "job", "parameters", "data", "model", "base_model_id", "method"];
const SUGGESTED = 100; // datasets and models offered in the lists

const WHAT = {
  job: {
    title: "New job",
    list: "#/jobs",
    plural: "Jobs",
    path: "/v1/jobs",
    link: jobLink,
    page: (id) => `#/jobs/${encodeURIComponent(id)}`,
    start: { kind: "finetune" },
    jobOf: (spec) => spec, // the job spec in this spec
  },
  sweep: {
    title: "New sweep",
    list: "#/sweeps",
    plural: "Sweeps",
    path: "/v1/sweeps",
    link: sweepLink,
    page: (id) => `#/sweeps/${encodeURIComponent(id)}`,
    start: { job: { kind: "finetune" } },
    jobOf: (spec) => spec.job,
  },
};

/** The JSON Schema of a POST's JSON body, from the OpenAPI document. */
function bodySchema(openapi, path) {
  return openapi.paths[path].post.requestBody.content["application/json"].schema;
}

async function startingSpec(what, query) {
  const config = WHAT[what];
  const job = query.get("job");
  const sweep = query.get("sweep");
  if (sweep) {
    const source = await apiJson(`/v1/sweeps/${encodeURIComponent(sweep)}`);
    return { spec: source.spec, from: ["sweep", sweep] };
  }
  if (job) {
    const source = await apiJson(`/v1/jobs/${encodeURIComponent(job)}`);
    const checkpoint = query.get("checkpoint");
    const spec = checkpoint ? { ...source.spec, base_checkpoint_id: checkpoint } : source.spec;
    return { spec: what === "job" ? spec : { job: spec }, from: ["job", job] };
  }
  const spec = structuredClone(config.start);
  const dataset = query.get("dataset");
  if (dataset) config.jobOf(spec).data = { train: dataset };
  return { spec, from: null };
}

function datalist(id, entries) {
  return h("datalist", { id }, entries.map(([value, label]) => h("option", { value }, label)));
}

function renderCreate(view, query, what) {
  const config = WHAT[what];
  document.title = `${config.title} · tunery`;
  let disposed = false;
  let spec = {};
  let form = null;
  const opened = new Set();
  const message = h("div", { class: "message" });
  const subtitle = h("p", { class: "subtitle" });
  const fields = h("div", { class: "spec-form", id: "spec-form" });
  const jsonArea = h("textarea", {
    id: "spec-json",
    class: "spec-json",
    rows: 24,
    spellcheck: "false",
    "aria-describedby": "spec-json-state",
  });
  const jsonState = h("p", { id: "spec-json-state", class: "hint", role: "status" });
  // Enabled once the form is drawn.
  const submit = h("button", { type: "submit", id: "create-submit", disabled: true }, `Create ${what}`);
  const lists = h("div", { hidden: true });
  const paths = h("div", { hidden: true });
  let build = () => {};

  function showJson() {
    jsonArea.value = JSON.stringify(spec, null, 2);
    jsonArea.removeAttribute("aria-invalid");
    jsonState.textContent = "In step with the form.";
  }

  /** Redraws the fields from `spec`, keeping the keyboard focus on the control it was on. */
  function rebuild({ json = true } = {}) {
    const focused = document.activeElement?.id;
    build();
    if (json) showJson();
    if (focused && focused !== jsonArea.id) document.getElementById(focused)?.focus();
  }

  jsonArea.addEventListener("input", () => {
    let parsed;
    try {
      parsed = JSON.parse(jsonArea.value);
    } catch (error) {
      jsonArea.setAttribute("aria-invalid", "true");
      jsonState.textContent = `Not valid JSON, so the form shows the last spec that was: ${error.message}`;
      return;
    }
    if (!isObject(parsed)) {
      jsonArea.setAttribute("aria-invalid", "true");
      jsonState.textContent = "The spec is a JSON object ({…}).";
      return;
    }
    spec = parsed;
    jsonArea.removeAttribute("aria-invalid");
    jsonState.textContent = "In step with the form.";
    rebuild({ json: false });
  });

  async function create(event) {
    event.preventDefault();
    if (jsonArea.getAttribute("aria-invalid") === "true") {
      replace(message, errorBox(new Error("The JSON is not valid: fix it, or edit the form, first.")));
      jsonArea.focus();
      return;
    }
    submit.disabled = true;
    submit.textContent = "Creating…";
    try {
      const made = await apiJson(config.path, { method: "POST", json: spec });
      if (!disposed) location.hash = config.page(made.id);
    } catch (error) {
      if (disposed || error instanceof AuthRequired) return;
      showProblem(error);
    } finally {
      submit.disabled = false;
      submit.textContent = `Create ${what}`;
    }
  }

  function showProblem(error) {
    if (!(error instanceof ApiError) || error.errors.length === 0) {
      replace(message, errorBox(error));
      return;
    }
    const { placed, unplaced } = form.showErrors(error.errors);
    const elsewhere = unplaced.map((e) => h("li", {}, h("code", {}, e.field), `: ${e.message}`));
    replace(
      message,
      h(
        "div",
        { class: "error", role: "alert" },
        `${error.title}: the API refused the ${what}`,
        placed ? "; what is wrong is shown beside each field." : ".",
        elsewhere.length ? h("ul", {}, elsewhere) : null,
      ),
    );
    placed?.focus();
  }

  replace(
    view,
    h("p", { class: "breadcrumb" }, h("a", { href: config.list }, `← ${config.plural}`)),
    heading(config.title),
    subtitle,
    message,
    h(
      "form",
      { class: "create", id: "create-form", novalidate: true, onsubmit: create, "aria-labelledby": "h-form" },
      card("h-form", "Spec", {}, fields, h("div", { class: "form-actions" }, submit)),
      card(
        "h-json",
        "As JSON",
        {},
        h("label", { for: "spec-json" }, "The spec sent"),
        jsonArea,
        jsonState,
        h(
          "p",
          { class: "hint" },
          "Edits here change the form, and the form's change this; what the form has no field ",
          "for stays here as written.",
        ),
      ),
    ),
    lists,
    paths,
  );

  (async () => {
    let loaded;
    try {
      loaded = await Promise.all([
        openApiDocument(),
        apiJson("/v1/spec-catalog"),
        apiJson(withQuery("/v1/datasets", { limit: SUGGESTED })),
        apiJson(withQuery("/v1/models", { limit: SUGGESTED })),
        startingSpec(what, query),
      ]);
    } catch (error) {
      if (!disposed && !(error instanceof AuthRequired)) replace(message, errorBox(error));
      return;
    }
    if (disposed) return;
    const [openapi, catalog, datasets, models, start] = loaded;
    spec = start.spec;
    if (start.from) {
      const [kind, id] = start.from;
      replace(subtitle, `Cloned from ${kind} `, WHAT[kind].link(id));
    }
    replace(
      lists,
      datalist("datasets-list", [
        ...datasets.data.map((d) => [d.id, `${d.name} (${d.task}, ${d.num_examples} examples)`]),
        ...catalog.builtin_datasets.map((name) => [name, "built-in"]),
      ]),
      datalist(
        "models-list",
        models.data.map((m) => [m.id, `${m.name || m.id} (${m.architecture}, ${m.task})`]),
      ),
    );
    const root = binding(
      () => spec,
      (value) => {
        spec = value ?? {};
      },
    );
    build = () => {
      form = new SchemaForm({
        root: openapi,
        widgets: { ModelSpec: modelField(catalog), MethodSpec: methodField(catalog) },
        lists: LISTS,
        order: ORDER,
        opened,
        onChange: showJson,
        rerender: () => rebuild(),
      });
      const node = bodySchema(openapi, config.path);
      replace(fields, form.field({ name: what, node, bound: root, path: "", required: true }));
      const searchable = [...form.fields.keys()].filter((path) => SEARCHABLE.test(path));
      replace(paths, datalist("paths-list", searchable.map((path) => [path.slice(4), ""])));
    };
    rebuild();
    submit.disabled = false;
    view.dataset.loaded = "true";
  })();

  return () => {
    disposed = true;
  };
}

export const newJobPage = { render: (view, _params, query) => renderCreate(view, query, "job") };
export const newSweepPage = { render: (view, _params, query) => renderCreate(view, query, "sweep") };
