// Predict on the model page: an example of the inputs a model takes, and its answer drawn by
// the model's task. Each task's answer has fields of its own (app/services/models.py ANSWERS);
// RENDERERS holds one renderer per task that predicts, so that the page knows none of them.

import { h, number } from "./dom.js";

// The labels shown per input, most probable first: the runner-ups, not all of a 100-way head.
const TOP_LABELS = 3;
// Inputs of up to this many numbers are prefilled with zeros; larger ones (images) only hinted.
const ZEROS_PREFILLED = 256;
// The IOB tag of a word outside every entity (trainer/tagged_news.py).
const OUTSIDE = "O";

function takesText(model) {
  return model.modality === "text";
}

function zeros(shape) {
  const [length, ...rest] = shape;
  return Array.from({ length }, () => (rest.length ? zeros(rest) : 0));
}

/** One input as predict takes it, in words: "a text", "a row …", or the numbers' shape. */
export function inputShown(model) {
  if (takesText(model)) return "a text";
  const numbers = `numbers of shape [${model.input_shape.join(", ")}]`;
  return model.columns ? `a row keyed by column name, or ${numbers}` : numbers;
}

/** The JSON of a batch of one example input, or "" where none is made up (large inputs). */
export function exampleInputs(model) {
  if (takesText(model)) return JSON.stringify(["an example sentence"]);
  if (model.columns) {
    const row = Object.fromEntries(model.columns.map((c) => [c.name, c.categories?.[0] ?? 0]));
    return JSON.stringify([row], null, 2);
  }
  const size = model.input_shape.reduce((product, length) => product * length, 1);
  return size <= ZEROS_PREFILLED ? JSON.stringify([zeros(model.input_shape)]) : "";
}

/** A table: `columns` names its header; each row's first cell is its header cell. */
function table(caption, columns, rows) {
  return h(
    "table",
    { class: "answer-table" },
    h("caption", { class: "visually-hidden" }, caption),
    h("thead", {}, h("tr", {}, columns.map((name) => h("th", { scope: "col" }, name)))),
    h(
      "tbody",
      {},
      rows.map(({ cells: [first, ...rest], chosen = false }) =>
        h(
          "tr",
          { class: chosen ? "chosen" : null },
          h("th", { scope: "row" }, first),
          rest.map((cell) => h("td", { class: "num" }, cell)),
        ),
      ),
    ),
  );
}

/** A probability as a bar (a <meter>: no style needed) and a percentage. */
function probability(value) {
  return h(
    "span",
    { class: "probability" },
    h("meter", { min: 0, max: 1, value, "aria-hidden": "true" }),
    `${(value * 100).toFixed(1)} %`,
  );
}

/** The answer's inputs in order, one list item each. */
function perInput(items) {
  return h(
    "ol",
    { class: "answers" },
    items.map((children) => h("li", { class: "answer" }, children)),
  );
}

function classification({ predictions, probabilities, labels }) {
  return perInput(
    predictions.map((label, i) => {
      const ranked = probabilities[i]
        .map((value, j) => ({ label: labels[j], value }))
        .sort((a, b) => b.value - a.value)
        .slice(0, TOP_LABELS);
      return [
        h("p", { class: "predicted" }, "Label: ", h("strong", {}, label)),
        table(
          `The most probable labels of input ${i + 1}`,
          ["Label", "Probability"],
          ranked.map((r) => ({ cells: [r.label, probability(r.value)], chosen: r.label === label })),
        ),
      ];
    }),
  );
}

function multilabel({ label_sets: labelSets, probabilities, labels, thresholds }) {
  return perInput(
    labelSets.map((chosen, i) => [
      h(
        "p",
        { class: "predicted" },
        "Labels: ",
        h("strong", {}, chosen.length ? chosen.join(", ") : "none"),
      ),
      table(
        `Each label's probability of input ${i + 1} and its threshold`,
        ["Label", "Probability", "Threshold"],
        labels.map((label, j) => ({
          cells: [label, probability(probabilities[i][j]), number(thresholds[j])],
          chosen: chosen.includes(label),
        })),
      ),
    ]),
  );
}

function regression({ values, targets }) {
  return table(
    "Each input's predicted targets",
    ["Input", ...targets],
    values.map((row, i) => ({ cells: [i + 1, ...row.map(number)] })),
  );
}

function forecasting({ forecasts, targets }) {
  return perInput(
    forecasts.map((bySeries, i) => {
      const horizon = bySeries[targets[0]].length;
      const steps = Array.from({ length: horizon }, (_, step) => ({
        cells: [step + 1, ...targets.map((series) => number(bySeries[series][step]))],
      }));
      return table(`The forecast of input ${i + 1}, step by step`, ["Step", ...targets], steps);
    }),
  );
}

function taggedWord(word, tag) {
  if (tag === OUTSIDE) return h("span", { class: "word" }, word);
  return h("span", { class: "word entity" }, word, h("span", { class: "tag" }, `/${tag}`));
}

function tokenClassification({ tags, words }) {
  return perInput(
    words.map((row, i) =>
      h(
        "p",
        { class: "tagged" },
        row.map((word, j) => [taggedWord(word, tags[i][j]), " "]),
      ),
    ),
  );
}

/** Predict's answer drawn, by the model's task: `(response, model) => Node`. */
export const RENDERERS = {
  classification,
  regression,
  multilabel,
  token_classification: tokenClassification,
  forecasting,
};
