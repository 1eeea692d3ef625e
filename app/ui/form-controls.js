// The controls of a form's scalar fields (spec-form.js), one per type: each shows the field's
// value (`f.bound.get()`) or, as its placeholder, its default, and hands `write` the value
// parsed from what is typed — undefined when it is emptied, so that the default applies.

import { h } from "./dom.js";

/** An enum as a select: the default (or nothing) first, then each value. */
export function choiceControl(f, write) {
  const value = f.bound.get();
  const options = f.schema.enum;
  let blank = f.optional ? "—" : "choose…";
  if (f.schema.default !== undefined) blank = `default (${f.schema.default})`;
  const select = h(
    "select",
    {},
    h("option", { value: "" }, blank),
    options.map((option, index) =>
      h("option", { value: String(index), selected: option === value }, String(option)),
    ),
  );
  select.addEventListener("change", () => {
    write(select.value === "" ? undefined : options[Number(select.value)]);
  });
  return select;
}

/** Checked as the value or its default; a value equal to the default is left out. */
export function checkboxControl(f, write) {
  const fallback = f.schema.default ?? false;
  const input = h("input", { type: "checkbox", checked: f.bound.get() ?? fallback });
  input.addEventListener("change", () => write(input.checked === fallback ? undefined : input.checked));
  return input;
}

export function numberControl(f, write) {
  const { schema } = f;
  const input = h("input", {
    type: "number",
    step: schema.type === "integer" ? 1 : "any",
    min: schema.minimum,
    max: schema.maximum,
    placeholder: schema.default ?? "",
    value: f.bound.get() ?? "",
  });
  input.addEventListener("input", () => {
    const raw = input.value.trim();
    write(raw === "" ? undefined : Number(raw));
  });
  return input;
}

/** A text box; `list`: the id of a datalist of suggestions. */
export function textControl(f, write, list) {
  const input = h("input", {
    type: "text",
    maxlength: f.schema.maxLength,
    placeholder: f.schema.default ?? f.schema.examples?.[0] ?? "",
    value: f.bound.get() ?? "",
    list,
    spellcheck: "false",
    autocomplete: "off",
  });
  input.addEventListener("input", () => write(input.value === "" ? undefined : input.value));
  return input;
}

/**
 * An array of scalars (`items`: their schemas) as "8, 16": numbers where the items are numbers,
 * words where they are strings, each part as JSON where they are mixed (`16, adam, true`).
 */
export function listControl(f, write, items) {
  const numeric = items.every((s) => s.type === "number" || s.type === "integer");
  const strings = items.every((s) => s.type === "string");
  const parse = (part) => {
    if (numeric) return Number.isNaN(Number(part)) ? part : Number(part);
    if (strings) return part;
    try {
      return JSON.parse(part);
    } catch {
      return part;
    }
  };
  const shown = (f.bound.get() ?? [])
    .map((v) => (typeof v === "string" ? v : JSON.stringify(v)))
    .join(", ");
  const placeholder = Array.isArray(f.schema.default) ? f.schema.default.join(", ") : "";
  const input = h("input", {
    type: "text",
    value: shown,
    placeholder,
    spellcheck: "false",
    autocomplete: "off",
  });
  input.addEventListener("input", () => {
    const parts = input.value.split(",").map((part) => part.trim()).filter(Boolean);
    write(parts.length ? parts.map(parse) : undefined);
  });
  return input;
}

/** A file, written as the File itself (for a multipart body). */
export function fileControl(_f, write) {
  const input = h("input", { type: "file" });
  input.addEventListener("change", () => write(input.files[0]));
  return input;
}
