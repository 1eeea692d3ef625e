// The two parts of a job spec that its JSON Schema leaves open, filled from GET /v1/spec-catalog:
// `model` (an architecture, and the params that architecture takes) and `method` (a method of
// the job's kind, and its params). Widgets for SchemaForm, by the name of the schema they stand
// for (ModelSpec, MethodSpec in trainer/spec.py).

import { h } from "./dom.js";
import { binding, child, isObject } from "./schema.js";
import { joinPath } from "./spec-form.js";

function modalities(entry) {
  return `${entry.name} (${entry.modalities.join(", ")})`;
}

/**
 * The select of a registry name (`key` of the value), with the given `options` [{name, label}];
 * choosing one starts its params afresh, since another entry's params do not apply.
 */
function nameSelect(form, f, key, options, blank) {
  const value = f.bound.get();
  const current = isObject(value) ? value[key] : undefined;
  const known = options.some((option) => option.name === current);
  const select = h(
    "select",
    {},
    h("option", { value: "" }, blank),
    current !== undefined && !known
      ? h("option", { value: current, selected: true }, `${current} (unknown)`)
      : null,
    options.map((option) =>
      h("option", { value: option.name, selected: option.name === current }, option.label),
    ),
  );
  select.addEventListener("change", () => {
    form.write(f, select.value ? { [key]: select.value } : undefined);
    form.rerender();
  });
  const path = joinPath(f.path, key);
  return form.leaf({ ...f, name: key, path, required: !f.optional, schema: {} }, select);
}

/**
 * The params of the chosen entry, from its JSON Schema (whose own `$defs` its refs name).
 * `named`: the value's name, written with the first param given where only a default named it;
 * `folded`: the params shown folded until one is given (a method's, whose defaults usually do).
 */
function paramsFields(form, f, entry, { named = {}, folded = false } = {}) {
  const params = child(f.bound, "params");
  const bound = binding(params.get, (value) => {
    params.set(value);
    if (value !== undefined) f.bound.set({ ...named, ...f.bound.get() });
  });
  const path = joinPath(f.path, "params");
  if (!entry) {
    const node = f.schema.properties.params;
    return form.field({ name: "params", node, bound, path, required: false, root: f.root });
  }
  const schema = entry.params_schema;
  const fields = form.properties(schema, bound, path, { root: schema });
  const empty = fields.length ? null : h("p", { class: "muted" }, `${entry.name} takes no params.`);
  const schemaShown = { description: schema.description };
  const group = { ...f, name: "params", path, bound, optional: folded, schema: schemaShown };
  return form.group(group, empty ?? fields);
}

/** `model`: an architecture (or none, where a base model may be given instead) and its params. */
export function modelField(catalog) {
  return (form, f) => {
    const options = catalog.architectures.map((arch) => ({ name: arch.name, label: modalities(arch) }));
    const blank = f.optional ? "none: start from base_model_id" : "choose…";
    const select = nameSelect(form, f, "architecture", options, blank);
    const name = f.bound.get()?.architecture;
    const arch = catalog.architectures.find((a) => a.name === name);
    const params = name === undefined ? null : paramsFields(form, f, arch);
    return form.group({ ...f, optional: false }, [select, params]);
  };
}

/**
 * `method`: a method of the job's kind and its params. A method of another kind (left from
 * before the kind was changed) is dropped: the kind's default applies, or one must be chosen.
 */
export function methodField(catalog) {
  return (form, f) => {
    const ofKind = catalog.methods.filter((m) => m.kind === f.tag);
    const named = f.bound.get()?.name;
    const elsewhere = catalog.methods.some((m) => m.name === named && m.kind !== f.tag);
    if (elsewhere && !ofKind.some((m) => m.name === named)) f.bound.set(undefined);
    const fallback = f.schema.default?.name;
    const options = ofKind.map((m) => ({ name: m.name, label: modalities(m) }));
    const blank = fallback ? `default (${fallback})` : "choose…";
    const select = nameSelect(form, f, "name", options, blank);
    const name = f.bound.get()?.name ?? fallback;
    const method = catalog.methods.find((m) => m.name === name);
    const params =
      name === undefined ? null : paramsFields(form, f, method, { named: { name }, folded: true });
    return form.group({ ...f, optional: false }, [select, params]);
  };
}
