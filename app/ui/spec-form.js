// Forms built from a request body's JSON Schema (from /openapi.json): a field for each property,
// by its type — a scalar's control (form-controls.js: a number box, a text box, a select for an
// enum, a checkbox, a comma-separated list, a file), a group for an object, a kind select that
// switches a tagged union's variant, rows for a map, a name-or-object shorthand (a dataset, or a
// subset of one), and a JSON box for anything else. Each field reads and writes one place of the value through a binding (schema.js); the
// defaults and bounds are in its hint; the API's 422 errors are put beside the field they name.

import { h } from "./dom.js";
import {
  checkboxControl,
  choiceControl,
  fileControl,
  listControl,
  numberControl,
  textControl,
} from "./form-controls.js";
import {
  binding,
  child,
  constraintsText,
  isObject,
  orderedProperties,
  prune,
  refName,
  resolve,
  unwrap,
} from "./schema.js";

const SCALAR_TYPES = new Set(["string", "number", "integer", "boolean"]);

export function joinPath(path, key) {
  return path ? `${path}.${key}` : key;
}

function idOf(path) {
  return `field-${path.replace(/[^A-Za-z0-9_-]/g, "-")}`;
}

/** Text with `code` spans, as pydantic's descriptions write them, as text nodes and <code>. */
export function prose(text) {
  return String(text ?? "")
    .split("`")
    .map((part, index) => (index % 2 ? h("code", {}, part) : part));
}

/** Whether `value` can be shown by the field made for `schema` (else it gets a JSON box). */
function fits(schema, value) {
  if (value === undefined || value === null) return true;
  if (schema.enum) return schema.enum.some((option) => option === value);
  switch (schema.type) {
    case "integer":
    case "number":
      return typeof value === "number";
    case "string":
      return typeof value === "string" || value instanceof Blob;
    case "boolean":
      return typeof value === "boolean";
    case "array":
      return Array.isArray(value);
    case "object":
      return isObject(value);
    default:
      return true;
  }
}

/** The item schemas of an array whose items are all scalars (or unions of scalars), else null. */
function scalarItems(schema, root) {
  const items = schema.prefixItems ?? (schema.items ? [schema.items] : []);
  const resolved = items.map((item) => resolve(item, root));
  const scalar = (s) =>
    SCALAR_TYPES.has(s.type) || (s.anyOf ?? []).every((b) => SCALAR_TYPES.has(b.type) || b.type === "null");
  return resolved.length && resolved.every(scalar) ? resolved : null;
}

/** For `anyOf: [string, object]` where the object requires one string: that object and key. */
function shorthandOf(schema, root) {
  const branches = (schema.anyOf ?? []).filter((b) => b.type !== "null").map((b) => resolve(b, root));
  if (branches.length !== 2) return null;
  const text = branches.find((b) => b.type === "string");
  const object = branches.find((b) => b.type === "object" && b.properties);
  const key = object?.required?.length === 1 ? object.required[0] : null;
  return text && key && object.properties[key]?.type === "string" ? { object, key } : null;
}

/** A tagged union's tags, in the order of its `oneOf` (the mapping's keys are sorted). */
function tagsOf(schema) {
  const { mapping } = schema.discriminator;
  const tags = Object.keys(mapping);
  const ordered = (schema.oneOf ?? []).map((branch) => tags.find((tag) => mapping[tag] === branch.$ref));
  return [...new Set([...ordered.filter(Boolean), ...tags])];
}

/** A new map entry's value: a tagged union's first variant, or an empty object. */
function initialEntry(node, root) {
  const { schema } = unwrap(node, root);
  return schema.discriminator ? { [schema.discriminator.propertyName]: tagsOf(schema)[0] } : {};
}

export class SchemaForm {
  /**
   * `root`: where `$ref`s resolve; `widgets`: {RefName: (form, field) => element} for the parts
   * a schema alone cannot describe; `lists`: {propertyName: datalist id} for suggestions;
   * `order`: property names shown before the others; `opened`: the paths of groups opened (kept
   * by the caller across redraws); `onChange()` after every edit; `rerender()` after an edit
   * that changes which fields there are.
   */
  constructor({ root, widgets = {}, lists = {}, order = [], opened = new Set(), onChange, rerender }) {
    Object.assign(this, { root, widgets, lists, order, opened, onChange, rerender });
    this.fields = new Map(); // dotted path -> {element, control, errors}
  }

  /** The field(s) for one value: `{name, node, bound, path, required, root, tag, bare}`. */
  field(field) {
    const root = field.root ?? this.root;
    const { schema, nullable } = unwrap(field.node, root);
    const f = { ...field, root, schema, optional: nullable || !field.required };
    const widget = this.widgets[refName(field.node)];
    if (widget) return widget(this, f);
    const value = f.bound.get(); // null, as a clone of a spec has it, is not given either
    if (schema.discriminator && (value == null || isObject(value))) return this.union(f);
    if (!fits(schema, value)) return this.json(f);
    const write = (given) => this.write(f, given);
    // A file: OpenAPI 3.1 gives it a media type (3.0 said `format: binary`).
    if (schema.contentMediaType || schema.format === "binary") return this.leaf(f, fileControl(f, write));
    if (schema.enum) return this.leaf(f, choiceControl(f, write));
    if (schema.type === "boolean") return this.leaf(f, checkboxControl(f, write));
    if (schema.type === "integer" || schema.type === "number") return this.leaf(f, numberControl(f, write));
    if (schema.type === "string") return this.leaf(f, textControl(f, write, this.lists[f.name]));
    const items = schema.type === "array" ? scalarItems(schema, root) : null;
    if (items) return this.leaf(f, listControl(f, write, items), { hintExtra: "comma-separated" });
    if (schema.type === "object" && schema.properties) return this.object(f);
    if (schema.type === "object" && isObject(schema.additionalProperties)) return this.map(f);
    const shorthand = shorthandOf(schema, root);
    if (shorthand && (value == null || typeof value === "string" || isObject(value))) {
      return this.shorthand(f, shorthand);
    }
    return this.json(f);
  }

  /** The fields of an object schema's properties, minus `skip`, through `bound`. */
  properties(schema, bound, path, { root = this.root, tag = null, skip = [] } = {}) {
    const required = schema.required ?? [];
    return orderedProperties(schema, this.order)
      .filter(([name]) => !skip.includes(name))
      .map(([name, node]) =>
        this.field({
          name,
          node,
          bound: child(bound, name),
          path: joinPath(path, name),
          required: required.includes(name),
          root,
          tag,
        }),
      );
  }

  /** A labelled control with its hint and a place for its errors. */
  leaf(f, control, { hintExtra = "" } = {}) {
    const id = idOf(f.path);
    control.id = id;
    control.dataset.path = f.path;
    const errors = h("div", { class: "field-errors", id: `${id}-errors`, role: "status" });
    const { description } = f.schema;
    const words = [constraintsText(f.schema), hintExtra].filter(Boolean).join(" · ");
    const hint =
      description || words
        ? h(
            "p",
            { class: "hint", id: `${id}-hint` },
            prose(description),
            description && words ? " " : "",
            words ? h("span", { class: "constraints" }, `(${words})`) : null,
          )
        : null;
    control.setAttribute("aria-describedby", [hint?.id, errors.id].filter(Boolean).join(" "));
    const element = h(
      "div",
      { class: control.type === "checkbox" ? "field checkbox" : "field", dataset: { path: f.path } },
      h(
        "label",
        { for: id },
        h("code", {}, f.name),
        f.required ? h("span", { class: "required" }, " required") : null,
      ),
      control,
      hint,
      errors,
    );
    this.fields.set(f.path, { element, control, errors });
    return element;
  }

  /**
   * A group of fields: a <fieldset>, or for an optional part (whose defaults apply until it is
   * given) a <details>, open once it has a value or the user opened it.
   */
  group(f, children) {
    const errors = h("div", { class: "field-errors", role: "status" });
    const { description } = f.schema;
    const body = [description ? h("p", { class: "hint" }, prose(description)) : null, errors, children];
    let element;
    if (f.optional) {
      const given = f.bound.get() != null;
      element = h(
        "details",
        { class: "group", open: given || this.opened.has(f.path), dataset: { path: f.path } },
        h("summary", {}, h("code", {}, f.name), given ? null : h("span", { class: "muted" }, " · defaults")),
        body,
      );
      element.addEventListener("toggle", () => {
        if (element.open) this.opened.add(f.path);
        else this.opened.delete(f.path);
      });
    } else {
      const legend = h("legend", {}, h("code", {}, f.name));
      element = h("fieldset", { class: "group", dataset: { path: f.path } }, legend, body);
    }
    this.fields.set(f.path, { element, control: null, errors });
    return element;
  }

  write(f, value) {
    f.bound.set(value);
    this.onChange?.();
  }

  object(f) {
    const fields = this.properties(f.schema, f.bound, f.path, { root: f.root, tag: f.tag });
    return f.path === "" || f.bare ? fields : this.group(f, fields);
  }

  /** A tagged union (`discriminator`): its tag as a select, then the chosen variant's fields. */
  union(f) {
    const { propertyName, mapping } = f.schema.discriminator;
    const tags = tagsOf(f.schema);
    const value = f.bound.get();
    const tag = value?.[propertyName];
    const known = tags.includes(tag);
    const select = h(
      "select",
      { name: propertyName },
      known ? null : h("option", { value: "" }, tag === undefined ? "choose…" : `${tag} (unknown)`),
      tags.map((option) => h("option", { value: option, selected: option === tag }, option)),
    );
    select.addEventListener("change", () => {
      if (!select.value) return;
      const now = f.bound.get(); // edited since this was drawn
      const kept = prune(isObject(now) ? now : {}, { $ref: mapping[select.value] }, f.root);
      delete kept[propertyName];
      this.write(f, { [propertyName]: select.value, ...kept }); // the tag first, as people write it
      this.rerender();
    });
    const tagPath = joinPath(f.path, propertyName);
    const tagField = this.leaf(
      { ...f, name: propertyName, path: tagPath, required: true, schema: {} },
      select,
    );
    const variant = known ? resolve({ $ref: mapping[tag] }, f.root) : null;
    const fields = variant
      ? [
          variant.description ? h("p", { class: "hint variant" }, prose(variant.description)) : null,
          ...this.properties(variant, f.bound, f.path, { root: f.root, tag, skip: [propertyName] }),
        ]
      : [];
    if (f.path === "" || f.bare) return [tagField, ...fields];
    return this.group({ ...f, optional: false }, [tagField, ...fields]);
  }

  /** A map (`additionalProperties`): a row per entry, its name editable, and a row to add one. */
  map(f) {
    const valueNode = f.schema.additionalProperties;
    // The entries as they are now, edited since this was drawn.
    const entries = () => (isObject(f.bound.get()) ? f.bound.get() : {});
    const rename = (from, to) => {
      const current = entries();
      if (!to || to === from || to in current) return;
      const renamed = Object.entries(current).map(([key, value]) => [key === from ? to : key, value]);
      this.write(f, Object.fromEntries(renamed));
      this.rerender();
    };
    const rows = Object.keys(entries()).map((key) => {
      const keyInput = h("input", {
        type: "text",
        class: "map-key",
        value: key,
        list: this.lists[f.name],
        "aria-label": `${f.name}: the name of ${key}`,
      });
      keyInput.addEventListener("change", () => rename(key, keyInput.value.trim()));
      const remove = h("button", { type: "button", class: "secondary" }, "Remove");
      remove.addEventListener("click", () => {
        const { [key]: _removed, ...rest } = entries();
        this.write(f, Object.keys(rest).length ? rest : undefined);
        this.rerender();
      });
      const entry = this.field({
        name: key,
        node: valueNode,
        bound: child(f.bound, key),
        path: joinPath(f.path, key),
        required: true,
        root: f.root,
        tag: f.tag,
        bare: true,
      });
      const path = joinPath(f.path, key);
      const errors = h("div", { class: "field-errors", id: `${idOf(path)}-errors`, role: "status" });
      const element = h(
        "div",
        { class: "map-entry", dataset: { key } },
        h("div", { class: "map-entry-head" }, keyInput, remove),
        errors,
        entry,
      );
      this.fields.set(path, { element, control: keyInput, errors });
      return element;
    });
    const newKey = h("input", {
      type: "text",
      id: `${idOf(f.path)}-new`,
      class: "map-key",
      list: this.lists[f.name],
      "aria-label": `New ${f.name} name`,
    });
    const add = h("button", { type: "button", class: "secondary" }, `Add to ${f.name}`);
    add.addEventListener("click", () => {
      const key = newKey.value.trim();
      const current = entries();
      if (!key || key in current) return;
      this.write(f, { ...current, [key]: initialEntry(valueNode, f.root) });
      this.rerender();
    });
    return this.group({ ...f, optional: false }, [...rows, h("div", { class: "map-add" }, newKey, add)]);
  }

  /** A name, or an object holding it and more (a dataset, or a subset of it): one group. */
  shorthand(f, { object, key }) {
    const asObject = (value) => (typeof value === "string" ? { [key]: value } : value);
    const asGiven = (value) =>
      isObject(value) && Object.keys(value).length === 1 && key in value ? value[key] : value;
    const bound = binding(
      () => asObject(f.bound.get()),
      (value) => f.bound.set(asGiven(value)),
    );
    const fields = this.properties(object, bound, f.path, { root: f.root, tag: f.tag });
    const description = f.schema.description ?? object.description;
    const inline = h("div", { class: "inline-fields" }, fields);
    return this.group({ ...f, schema: { ...object, description } }, inline);
  }

  /** Anything else, as JSON: written once it parses; until then the field says it does not. */
  json(f) {
    const value = f.bound.get();
    const area = h(
      "textarea",
      { rows: 2, class: "json-field", spellcheck: "false" },
      value == null ? "" : JSON.stringify(value),
    );
    const element = this.leaf(f, area, { hintExtra: "JSON" });
    const { errors } = this.fields.get(f.path);
    area.addEventListener("input", () => {
      errors.replaceChildren();
      area.removeAttribute("aria-invalid");
      if (area.value.trim() === "") return this.write(f, undefined);
      try {
        this.write(f, JSON.parse(area.value));
      } catch (error) {
        area.setAttribute("aria-invalid", "true");
        errors.append(h("p", { class: "field-error" }, `Not JSON yet: ${error.message}`));
      }
    });
    return element;
  }

  /** The registered field that `field` (a problem's dotted path) is in: the longest prefix. */
  closest(field) {
    let best = null;
    for (const path of this.fields.keys()) {
      const inside = field === path || field.startsWith(`${path}.`);
      if (path && inside && (best === null || path.length > best.length)) best = path;
    }
    return best;
  }

  clearErrors() {
    for (const { errors, control } of this.fields.values()) {
      errors.replaceChildren();
      control?.removeAttribute("aria-invalid");
    }
  }

  /**
   * The problem's `errors` ([{field, message}]) beside their fields, each group around them
   * opened. Returns {placed: the first field's element, unplaced: errors naming no field here}.
   */
  showErrors(errors) {
    this.clearErrors();
    const unplaced = [];
    let placed = null;
    for (const error of errors) {
      const path = this.closest(error.field ?? "");
      if (path === null) {
        unplaced.push(error);
        continue;
      }
      const { element, control, errors: slot } = this.fields.get(path);
      const within = error.field === path ? "" : `${error.field.slice(path.length + 1)}: `;
      slot.append(h("p", { class: "field-error" }, `${within}${error.message}`));
      control?.setAttribute("aria-invalid", "true");
      for (let group = element.closest("details"); group; group = group.parentElement?.closest("details")) {
        group.open = true;
      }
      placed ??= control ?? element;
    }
    return { placed, unplaced };
  }
}
