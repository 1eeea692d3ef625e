// JSON Schema as pydantic writes it into /openapi.json and the spec catalog: following `$ref`s,
// telling an optional field (`anyOf` with null) from its type, its bounds and default in words;
// and bindings, the get/set pairs through which a form's fields read and write one place in a
// JSON value.

/** The part of `root` that a local `$ref` ("#/components/schemas/X", "#/$defs/X") names. */
function target(ref, root) {
  return ref
    .replace(/^#\//, "")
    .split("/")
    .reduce((at, key) => at?.[key], root);
}

/** `node` with its `$ref`s followed in `root`; the node's own keys (default, description) win. */
export function resolve(node, root) {
  let resolved = node ?? {};
  for (let depth = 0; resolved.$ref && depth < 32; depth += 1) {
    const { $ref, ...own } = resolved;
    resolved = { ...(target($ref, root) ?? {}), ...own };
  }
  return resolved;
}

/** The name a `$ref` ends with ("ModelSpec"), of the node or of its one non-null branch. */
export function refName(node) {
  const ref = node?.$ref ?? node?.anyOf?.find((branch) => branch.$ref)?.$ref;
  return ref ? ref.split("/").at(-1) : null;
}

/**
 * {schema, nullable}: an `anyOf` of one type and null is that type, nullable; the outer node's
 * title, description and default are kept.
 */
export function unwrap(node, root) {
  const resolved = resolve(node, root);
  const branches = (resolved.anyOf ?? []).filter((branch) => branch.type !== "null");
  if (resolved.anyOf && branches.length === 1) {
    const { anyOf, ...outer } = resolved;
    return { schema: { ...resolve(branches[0], root), ...outer }, nullable: true };
  }
  return { schema: resolved, nullable: Boolean(resolved.anyOf?.some((b) => b.type === "null")) };
}

const BOUNDS = [
  ["minimum", "≥"],
  ["exclusiveMinimum", ">"],
  ["maximum", "≤"],
  ["exclusiveMaximum", "<"],
  ["minLength", "length ≥"],
  ["maxLength", "length ≤"],
  ["minItems", "items ≥"],
  ["maxItems", "items ≤"],
];

/** "default 10 · ≥ 1 · ≤ 10000": what a field takes, for its hint. */
export function constraintsText(schema) {
  const parts = [];
  if (schema.default !== undefined && schema.default !== null) {
    parts.push(`default ${JSON.stringify(schema.default)}`);
  }
  for (const [key, word] of BOUNDS) if (schema[key] !== undefined) parts.push(`${word} ${schema[key]}`);
  return parts.join(" · ");
}

/** A schema's object properties in order: `first` (those present) before the rest. */
export function orderedProperties(schema, first = []) {
  const properties = Object.entries(schema.properties ?? {});
  const rank = (name) => (first.includes(name) ? first.indexOf(name) : first.length);
  return properties
    .map((entry, index) => ({ entry, index }))
    .sort((a, b) => rank(a.entry[0]) - rank(b.entry[0]) || a.index - b.index)
    .map(({ entry }) => entry);
}

/**
 * A value with only the keys its object schema allows (an `additionalProperties: false` object,
 * through nested ones), and no object left empty by that: what survives switching a union to
 * another variant.
 */
export function prune(value, node, root) {
  const { schema } = unwrap(node, root);
  if (!isObject(value) || !schema.properties || schema.additionalProperties !== false) return value;
  const kept = {};
  for (const [key, inner] of Object.entries(value)) {
    if (!(key in schema.properties)) continue;
    const pruned = prune(inner, schema.properties[key], root);
    const emptied = isObject(pruned) && !Object.keys(pruned).length && Object.keys(inner).length;
    if (!emptied) kept[key] = pruned;
  }
  return kept;
}

export function isObject(value) {
  return value !== null && typeof value === "object" && !Array.isArray(value) && !(value instanceof Blob);
}

/** A binding to the whole of a value held elsewhere: `get()` and `set(value)`. */
export function binding(get, set) {
  return { get, set };
}

/**
 * A binding to `parent`'s property `key`. Setting undefined removes the key, and an object left
 * empty is removed from its own parent in turn: the spec keeps only what was given, and the API
 * fills in the rest.
 */
export function child(parent, key) {
  return binding(
    () => {
      const value = parent.get();
      return isObject(value) ? value[key] : undefined;
    },
    (value) => {
      const current = parent.get();
      const next = isObject(current) ? { ...current } : {};
      if (value === undefined) delete next[key];
      else next[key] = value;
      parent.set(Object.keys(next).length ? next : undefined);
    },
  );
}
