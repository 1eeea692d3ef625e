"""Audio through the HTTP API: a CNN on log-mel spectrograms of the built-in spoken digits
(espeak-ng's 12 voices), and two shifts from the male voices: to the female voices, and to the
female voices over a telephone line (`trainer.spoken_digits.telephone`); `dann`, `coral` and
`mmd` against `source_only` and against training on the target's labels (the upper bound).
Rewrites its section of docs/RESULTS.md (or `--out`).

    .venv/bin/python -m bench.audio

Every job trains the same small CNN with BatchNorm (each domain's batches normalised with their
own statistics, as adaptation needs) on the model's own log-mel front end, from raw 16 kHz
waveforms, with the same hyperparameters; adaptation methods run with their documented defaults
and keep their last epoch: nothing is chosen on the target's labels.
"""

import statistics

import httpx

from bench.jobs import Runner, bench_main, cell, checks_and_specs, header, hp, per_seed, values
from trainer.data import load_dataset

CNN_BN = {"architecture": "cnn", "params": {"channels": [16, 32], "hidden": 64,
                                            "batch_norm": True}}  # fmt: skip
HYPERPARAMETERS = {"epochs": 12, "batch_size": 32, "learning_rate": 3e-3, "lr_schedule": "cosine"}
ALL, MALE = "builtin:spoken-digits", "builtin:spoken-digits-male"
SHIFTS = {  # the target of each shift from the male voices
    "male -> female voices": "builtin:spoken-digits-female",
    "male -> female voices over a telephone line": "builtin:spoken-digits-female-telephone",
}
METHODS = ("source_only", "dann", "coral", "mmd")
ORACLE = "target labels (upper bound)"


def specs(seed: int) -> dict[tuple[str, str, int], dict]:
    hyper = hp(seed, **HYPERPARAMETERS)

    def finetune(dataset: str) -> dict:
        return {"kind": "finetune", "model": CNN_BN, "data": {"train": dataset},
                "hyperparameters": hyper}  # fmt: skip

    found = {("classification", "cnn, every voice", seed): finetune(ALL)}
    for shift, target in SHIFTS.items():
        adapt = {"kind": "adapt", "model": CNN_BN, "data": {"source": MALE, "target": target},
                 "hyperparameters": hyper}  # fmt: skip
        found |= {(shift, m, seed): adapt | {"method": {"name": m}} for m in METHODS}
        found[(shift, ORACLE, seed)] = finetune(target)
    return found


def run_experiments(client: httpx.Client, seeds: list[int]) -> dict:
    every = {key: spec for seed in seeds for key, spec in specs(seed).items()}
    return {"jobs": Runner(client).run(every), "specs": every}


def report(results: dict, seeds: list[int], elapsed_s: float) -> tuple[str, list[tuple[str, bool]]]:
    jobs = results["jobs"]
    classify = values(jobs, "classification", "cnn, every voice", "test_accuracy")
    lines = header("audio", seeds, elapsed_s, "Audio: espeak-ng's spoken digits")
    lines += [
        "## 1. A CNN on log-mel spectrograms, every voice",
        "",
        '360 clips of "zero" to "nine" (12 voices x 3 rates and pitches), 252 to train, '
        "36 to validate, 72 to test; the model takes 16 kHz waveforms and computes its own "
        "40-band log-mel spectrogram (25 ms windows every 10 ms).",
        "",
        "| model | test accuracy | per seed |",
        "|---|---|---|",
        f"| cnn (16, 32 channels, BatchNorm) | {cell(classify)} | {per_seed(classify)} |",
        "",
    ]
    checks = [
        (f"the CNN classifies spoken digits from waveforms ({100 * statistics.mean(classify):.1f}% "
         "on test, at least 90%)", statistics.mean(classify) >= 0.9),
    ]  # fmt: skip
    test_clips = len(load_dataset(SHIFTS[next(iter(SHIFTS))]).splits["test"])
    one_clip = 1 / test_clips
    for number, (shift, target) in enumerate(SHIFTS.items(), start=2):
        shown = target.removeprefix("builtin:")
        lines += [
            f"## {number}. Shift: {shift}",
            "",
            f"Source: the male voices `en+m1`-`m6` (126 labelled training clips); target: "
            f"`{shown}` (126 training clips, labels unread), scored on the target's "
            f"{test_clips} test clips. The upper bound trains on the target's labels.",
            "",
            "| method | target test accuracy | per seed | source test accuracy | gain |",
            "|---|---|---|---|---|",
        ]
        rows, shift_checks = _shift_rows(jobs, shift, one_clip)
        lines += [*rows, ""]
        checks += shift_checks
    lines.append(
        f"One target test clip is {100 * one_clip:.1f} points. espeak-ng's female voices are "
        "formant and pitch variants of the same synthesiser as its male ones, so the speaker "
        "shift alone is mild; the telephone line (the 300-3400 Hz band, 8-bit mu-law, noise "
        "20 dB below the speech) removes the bands a model of clean speech reads."
    )
    lines += checks_and_specs(checks, results["specs"], seeds[0])
    return "\n".join(lines), checks


def _shift_rows(jobs: dict, shift: str, one_clip: float) -> tuple[list[str], list]:
    """The table rows of one shift, and its checks."""
    baseline = statistics.mean(values(jobs, shift, "source_only", "test_accuracy"))
    rows, means = [], {}
    for row in (*METHODS, ORACLE):
        accuracy = values(jobs, shift, row, "test_accuracy")
        means[row] = statistics.mean(accuracy)
        source = cell(values(jobs, shift, row, "source_test_accuracy")) if row in METHODS else "—"
        rows.append(f"| {row} | {cell(accuracy)} | {per_seed(accuracy)} | {source} | "
                    f"{100 * (means[row] - baseline):+.1f} |")  # fmt: skip
    best = max(("dann", "coral", "mmd"), key=means.get)
    checks = [
        (f"{shift}: the shift costs source_only accuracy (target {100 * baseline:.1f}% against "
         f"{100 * means[ORACLE]:.1f}% with the target's labels)", baseline < means[ORACLE]),
        (f"{shift}: adaptation gains more than one target test clip over source_only ({best}, "
         f"the best: {100 * (means[best] - baseline):+.1f} points, a clip is "
         f"{100 * one_clip:.1f})", means[best] - baseline > one_clip),
    ]  # fmt: skip
    return rows, checks


if __name__ == "__main__":
    bench_main(__doc__.splitlines()[0], "bench.audio", run_experiments, report)
