// What the sweep pages read from a sweep (GET /v1/sweeps/{id}: its spec, its trials counted by
// state), in words: the objective and which way is better, the sampler, the pruner, the counts,
// and the values of the parameters.

export const ACTIVE = new Set(["queued", "running"]);
const TRIAL_STATES = ["running", "completed", "pruned", "failed"];

/** The sweep's objective: {metric, split, direction, label, better(a, b)}. */
export function objectiveOf(sweep) {
  const { metric, split } = sweep.spec.objective;
  const maximize = sweep.direction === "maximize";
  return {
    metric,
    split,
    direction: sweep.direction,
    maximize,
    label: `${split} ${metric}`,
    better: (a, b) => (maximize ? a > b : a < b),
  };
}

export function samplerText({ name, seed }) {
  return `${name} · seed ${seed}`;
}

export function prunerText(pruner) {
  const kept = pruner.keep_models ? " · pruned trials' models kept" : "";
  if (pruner.name === "median") {
    return `median · startup trials ${pruner.startup_trials} · warmup epochs ${pruner.warmup_epochs}${kept}`;
  }
  if (pruner.name === "none") return "none";
  return `${pruner.name} · min resource ${pruner.min_resource} · reduction factor ${pruner.reduction_factor}${kept}`;
}

/** "2 completed · 1 pruned · 1 running": the states that have trials, or "none yet". */
export function countsText(counts) {
  const parts = TRIAL_STATES.filter((state) => counts[state]).map((state) => `${counts[state]} ${state}`);
  return parts.length ? parts.join(" · ") : "none yet";
}

/** A parameter's short name: the last part of its path (`learning_rate`). */
export function paramName(path) {
  return path.split(".").at(-1);
}

/** A parameter's value as given (0.003, 1e-7, 64, "adamw"), sampled floats to 4 digits. */
export function paramText(value) {
  if (typeof value !== "number" || Number.isInteger(value)) return String(value);
  return String(Number(value.toPrecision(4)));
}
