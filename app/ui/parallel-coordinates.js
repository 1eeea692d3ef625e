// A sweep's parameters against its objective as parallel coordinates: a vertical axis per
// parameter and one for the objective, a line per completed trial through its values, coloured
// by its objective (pale: worse, dark: better). Chart.js has no such chart and its one y axis
// could not label each axis in its own units, so this draws it in SVG. Numeric axes run from
// the parameter's low to its high (a log axis when the parameter is searched on a log scale),
// categorical ones spread the choices evenly; the objective's axis spans the values seen.

import { h, number, svg } from "./dom.js";
import { paramName, paramText } from "./sweep-spec.js";

// In the drawing's units (its viewBox), which the page scales to the card's width: axes at
// least MIN_GAP apart, spread over MIN_WIDTH when there are few.
const MIN_WIDTH = 900;
const MIN_GAP = 150;
const HEIGHT = 320;
const MARGIN = { top: 40, right: 90, bottom: 20, left: 90 }; // room for the names over the axes
const WORSE = [107, 174, 214]; // #6baed6
const BETTER = [8, 48, 107]; // #08306b

/**
 * Ticks from `low` to `high`: both ends, and the round numbers between (multiples of 1, 2 or 5
 * times a power of ten, about four of them) not too close to an end to be read apart.
 */
function roundTicks(low, high, integer) {
  const span = high - low;
  if (span === 0) return [low];
  const magnitude = 10 ** Math.floor(Math.log10(span / 4));
  let step = [1, 2, 5, 10].map((m) => m * magnitude).find((candidate) => span / candidate <= 5);
  if (integer) step = Math.max(1, Math.round(step));
  const inner = [];
  for (let k = Math.ceil(low / step); k * step < high; k += 1) {
    const value = k * step;
    if (value - low > span * 0.08 && high - value > span * 0.08) inner.push(value);
  }
  return [low, ...inner, high];
}

/** The powers of ten between `low` and `high`, with both ends. */
function decades(low, high) {
  const powers = [];
  for (let e = Math.ceil(Math.log10(low)); e <= Math.floor(Math.log10(high)); e += 1) {
    powers.push(Number(`1e${e}`)); // exact, where 10 ** -5 is not
  }
  return [...new Set([low, ...powers, high])];
}

/**
 * A numeric axis from `low` to `high` (log-scaled when `log`): {position(value) in 0 … 1 (0 at
 * the bottom), ticks [{at, label}]}. A span of one value sits in the middle.
 */
export function numericAxis(low, high, { log = false, integer = false } = {}) {
  const scale = log ? Math.log10 : (value) => value;
  const [from, to] = [scale(low), scale(high)];
  const position = (value) => (to === from ? 0.5 : (scale(value) - from) / (to - from));
  const values = log ? decades(low, high) : roundTicks(low, high, integer);
  const ticks = values.map((value) => ({ at: position(value), label: paramText(value) }));
  return { position, ticks };
}

/** A parameter's axis, from its distribution in the sweep's spec. */
export function parameterAxis(parameter) {
  if (parameter.type !== "categorical") {
    return numericAxis(parameter.low, parameter.high, {
      log: parameter.log,
      integer: parameter.type === "int",
    });
  }
  const { choices } = parameter;
  const at = (index) => (choices.length === 1 ? 0.5 : index / (choices.length - 1));
  return {
    position: (value) => at(choices.indexOf(value)),
    ticks: choices.map((choice, index) => ({ at: at(index), label: paramText(choice) })),
  };
}

/** The colour of goodness `t` (0: the worst value seen, 1: the best). */
function shade(t) {
  const channel = (i) => Math.round(WORSE[i] + (BETTER[i] - WORSE[i]) * t);
  return `rgb(${channel(0)}, ${channel(1)}, ${channel(2)})`;
}

/**
 * The chart for the sweep's `spec` and its `trials` (TrialOut): an <svg>, one <polyline> per
 * completed trial (`data-trial-number`, a <title> with its values), or a note when none has.
 * `objective`: from objectiveOf(sweep).
 */
export function parallelCoordinates(spec, objective, trials) {
  const completed = trials.filter((t) => t.state === "completed" && t.value !== null);
  if (completed.length === 0) return h("p", { class: "muted" }, "No trial has completed yet.");
  const values = completed.map((t) => t.value);
  const [worst, best] = objective.maximize
    ? [Math.min(...values), Math.max(...values)]
    : [Math.max(...values), Math.min(...values)];
  const objectiveAxis = numericAxis(Math.min(...values), Math.max(...values));
  const axes = [
    ...Object.entries(spec.parameters).map(([path, parameter]) => ({
      name: paramName(path),
      title: `${path} (${parameter.type}${parameter.log ? ", log scale" : ""})`,
      scale: parameterAxis(parameter),
      value: (trial) => trial.params[path],
    })),
    {
      name: objective.label,
      title: `${objective.label} (${objective.direction})`,
      scale: objectiveAxis,
      value: (trial) => trial.value,
    },
  ];
  const width = Math.max(MIN_WIDTH, MARGIN.left + MIN_GAP * (axes.length - 1) + MARGIN.right);
  const gap = (width - MARGIN.left - MARGIN.right) / (axes.length - 1);
  const x = (index) => MARGIN.left + gap * index;
  const y = (at) => MARGIN.top + (1 - at) * (HEIGHT - MARGIN.top - MARGIN.bottom);
  const goodness = (value) => (best === worst ? 1 : (value - worst) / (best - worst));

  const axisElements = axes.map((axis, index) =>
    svg(
      "g",
      { class: "pc-axis", dataset: { axis: axis.name } },
      svg("title", {}, axis.title),
      svg("line", { x1: x(index), x2: x(index), y1: y(0), y2: y(1) }),
      svg("text", { class: "pc-name", x: x(index), y: MARGIN.top - 16 }, axis.name),
      axis.scale.ticks.map((tick) => [
        svg("line", { x1: x(index) - 4, x2: x(index), y1: y(tick.at), y2: y(tick.at) }),
        svg("text", { class: "pc-tick", x: x(index) - 7, y: y(tick.at) + 4 }, tick.label),
      ]),
    ),
  );
  // The best last, so that it is drawn over the others.
  const byGoodness = [...completed].sort((a, b) => goodness(a.value) - goodness(b.value));
  const lines = byGoodness.map((trial, rank) => {
    const points = axes.map((axis, i) => `${x(i)},${y(axis.scale.position(axis.value(trial)))}`);
    const said = axes.slice(0, -1).map((axis) => `${axis.name} ${paramText(axis.value(trial))}`);
    return svg(
      "polyline",
      {
        class: rank === byGoodness.length - 1 ? "pc-line best" : "pc-line",
        points: points.join(" "),
        stroke: shade(goodness(trial.value)),
        dataset: { trialNumber: trial.number },
      },
      svg("title", {}, `trial ${trial.number}: ${said.join(", ")} → ${number(trial.value)}`),
    );
  });
  const description =
    `${completed.length} completed trials across ${axes.length - 1} parameters and ` +
    `${objective.label}; the darker the line, the better; the thickest is the best.`;
  return svg(
    "svg",
    {
      class: "parallel",
      id: "parallel-coordinates",
      viewBox: `0 0 ${width} ${HEIGHT}`,
      role: "img",
      "aria-label": description,
    },
    svg("g", {}, lines),
    axisElements,
  );
}
