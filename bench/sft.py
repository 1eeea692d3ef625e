"""Fine-tuning causal language models: `sft` and `dpo` on tasks whose answers are checked
exactly. Runs through the HTTP API (jobs submitted, answers from `POST /v1/models/{id}/generate`)
and rewrites its section of docs/RESULTS.md (or `--out`).

    .venv/bin/python -m bench.sft                           # starts an embedded service
    .venv/bin/python -m bench.sft --out /tmp/sft-results.md

The tasks: reverse a string of 3 to 5 letters written with spaces between them (`reverse b f c`
-> `c f b`), and `encode` it (reverse it and move each letter one on: `encode b f c` -> `d g c`).
Every string that a validation or test prompt asks about is held out of all training and
pretraining, so an exact answer needs the skill, not a memory. Three experiments, over three
seeds (mean ± sd):
1. a tiny random-weight Llama (`tests.tiny_lm`, saved at start; nothing is downloaded): exact
   match before and after full SFT on reversal; then, from that model, full SFT against LoRA
   on encoding;
2. tunery's own `transformer`: causal-LM pretraining on a corpus of the task written out as
   text, then SFT on 32 chat examples, against SFT from random init on the same examples;
3. DPO of the random-weight Llama on preference pairs (the reversal preferred over a copy):
   margin and reward accuracy on held-out pairs, before and after.

The embedded service loads the tiny Llama by name, `tiny-llama`; a service given by `--url`
must have a model of that name configured (`TUNERY_HF_MODEL_DIRS`), saved as this bench saves
it.
"""

import json
import os
import random
import statistics
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import torch

from bench.jobs import Runner, bench_main, cell, checks_and_specs, header, hp, per_seed, values
from tests.tiny_lm import save_tiny_causal_lm
from trainer.generation import LanguageModel
from trainer.methods import dpo
from trainer.readers.chat import Message, PreferenceExample

LLAMA_NAME = "tiny-llama"
# The tiny Llama's tokenizer writes each of these letters alike wherever it stands (it merges
# none of them with the space before it), so every string is the same kind of token sequence.
LETTERS = "bcdefghk"
DATA_SEED = 0
HELD_OUT = 100  # strings each for validation and for test
TRAIN_EXAMPLES = 2000
FEW_EXAMPLES = 32
PREFERENCE_PAIRS = 1000
CORPUS = (6000, 300, 300)  # train, validation, test lines, of strings no fine-tune asks about
MAX_TOKENS = 16  # more than any answer needs: an answer that goes on is wrong

LLAMA = {"architecture": "hf_causal_lm", "params": {"base": LLAMA_NAME, "max_length": 64}}
TRANSFORMER = {
    "architecture": "transformer",
    "params": {"d_model": 64, "layers": 2, "heads": 4, "max_length": 64, "vocab_size": 64,
               "dropout": 0.0},
}  # fmt: skip
LORA = {"lora_rank": 16, "lora_alpha": 32}
# Besides the seed. Each learning rate is the one of the lowest final validation loss (the
# job's own validation split; never test) in a grid run on seed 0 while this bench was written:
# GRIDS, in the report.
COSINE = {"batch_size": 16, "lr_schedule": "cosine"}
HYPERPARAMETERS = {
    "reversal": COSINE | {"epochs": 20, "learning_rate": 1e-3},
    "encode, full": COSINE | {"epochs": 4, "learning_rate": 3e-3},
    "encode, LoRA": COSINE | {"epochs": 4, "learning_rate": 3e-3},
    "pretraining": COSINE | {"epochs": 15, "learning_rate": 3e-3},
    "few": COSINE | {"epochs": 30, "batch_size": 8, "learning_rate": 1e-3},
    "few, scratch": COSINE | {"epochs": 30, "batch_size": 8, "learning_rate": 3e-3},
    "dpo": COSINE | {"epochs": 8, "learning_rate": 3e-3},
}
GRIDS = {
    "reversal": (1e-3, 3e-3, 1e-2),
    "encode, full": (3e-4, 1e-3, 3e-3, 1e-2),
    "encode, LoRA": (1e-3, 3e-3, 1e-2),
    "pretraining": (1e-3, 3e-3, 1e-2),
    "few": (3e-4, 1e-3, 3e-3),
    "few, scratch": (3e-4, 1e-3, 3e-3, 1e-2, 3e-2),
    "dpo": (3e-4, 1e-3, 3e-3, 1e-2),
}


def reverse(letters: str) -> str:
    return " ".join(reversed(letters.split()))


NEXT = dict(zip(LETTERS, LETTERS[1:] + LETTERS[0], strict=True))


def encode(letters: str) -> str:
    """The reversal, each letter moved one on in LETTERS (the last to the first)."""
    return " ".join(NEXT[letter] for letter in reversed(letters.split()))


ANSWERS: dict[str, Callable[[str], str]] = {"reverse": reverse, "encode": encode}


def asked(task: str, letters: str) -> dict:
    return {"role": "user", "content": f"{task} {letters}"}


@dataclass(frozen=True)
class Strings:
    """The strings: held out for validation and test, and those training may read."""

    validation: list[str]
    test: list[str]
    train: list[str]

    @classmethod
    def drawn(cls) -> "Strings":
        """Different strings of 3 to 5 letters in a fixed random order; no palindrome, whose
        reversal is a copy."""
        rng, found = random.Random(DATA_SEED), {}
        while len(found) < 2 * HELD_OUT + TRAIN_EXAMPLES + sum(CORPUS):
            letters = [rng.choice(LETTERS) for _ in range(rng.randint(3, 5))]
            if letters != letters[::-1]:
                found.setdefault(" ".join(letters))
        strings = list(found)
        return cls(strings[:HELD_OUT], strings[HELD_OUT : 2 * HELD_OUT], strings[2 * HELD_OUT :])

    def held_out(self) -> dict[str, list[str]]:
        return {"validation": self.validation, "test": self.test}


def chat_lines(task: str, splits: dict[str, list[str]]) -> list[dict]:
    return [
        {"messages": [asked(task, s), {"role": "assistant", "content": ANSWERS[task](s)}],
         "split": split}
        for split, strings in splits.items()
        for s in strings
    ]  # fmt: skip


def preference_lines(splits: dict[str, list[str]]) -> list[dict]:
    return [
        {"input": {"messages": [asked("reverse", s)]},
         "preferred_output": [{"role": "assistant", "content": reverse(s)}],
         "non_preferred_output": [{"role": "assistant", "content": s}], "split": split}
        for split, strings in splits.items()
        for s in strings
    ]  # fmt: skip


def corpus_lines(strings: list[str]) -> list[dict]:
    """The task written out as lines of text, not as the chat the fine-tunes see."""
    train, validation, _test = CORPUS
    bounds = {"train": (0, train), "validation": (train, train + validation),
              "test": (train + validation, sum(CORPUS))}  # fmt: skip
    return [
        {"text": f"reverse {s} : {reverse(s)}", "split": split}
        for split, (start, end) in bounds.items()
        for s in strings[start:end]
    ]


def dataset_files(strings: Strings) -> dict[str, tuple[str, list[dict]]]:
    """The uploads by name: (task, lines). The fine-tunes train on the first strings of
    `strings.train`, the corpus is written from the others."""
    train, held_out = strings.train, strings.held_out()
    return {
        "reversal": ("chat", chat_lines("reverse", {"train": train[:TRAIN_EXAMPLES], **held_out})),
        "reversal-few": ("chat",
                         chat_lines("reverse", {"train": train[:FEW_EXAMPLES], **held_out})),
        "encoding": ("chat", chat_lines("encode", {"train": train[:TRAIN_EXAMPLES], **held_out})),
        "corpus": ("pretraining", corpus_lines(train[TRAIN_EXAMPLES:])),
        "preferences": ("chat",
                        preference_lines({"train": train[:PREFERENCE_PAIRS], **held_out})),
    }  # fmt: skip


def upload(client: httpx.Client, directory: Path, name: str, task: str, lines: list[dict]) -> str:
    path = directory / f"{name}.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    with path.open("rb") as file:
        response = client.post(
            "/v1/datasets", files={"file": (path.name, file)}, data={"name": name, "task": task}
        )
    response.raise_for_status()
    return response.json()["id"]


def sft(data: str, settings: str, seed: int, **params) -> dict:
    return {
        "kind": "finetune",
        "method": {"name": "sft", "params": params},
        "data": {"train": data},
        "hyperparameters": hp(seed, **HYPERPARAMETERS[settings]),
    }


Specs = dict[tuple[str, str, int], dict]


def first_specs(datasets: dict[str, str], seed: int) -> Specs:
    """The jobs that start from no model of the bench's."""
    return {
        ("llama", "full SFT", seed): sft(datasets["reversal"], "reversal", seed) | {"model": LLAMA},
        ("transformer", "causal_lm", seed): {
            "kind": "pretrain", "model": TRANSFORMER, "method": {"name": "causal_lm"},
            "data": {"train": datasets["corpus"]},
            "hyperparameters": hp(seed, **HYPERPARAMETERS["pretraining"]),
        },
        ("transformer", "scratch", seed):
            sft(datasets["reversal-few"], "few, scratch", seed) | {"model": TRANSFORMER},
        ("dpo", "dpo", seed): {
            "kind": "finetune", "model": LLAMA, "method": {"name": "dpo"},
            "data": {"train": datasets["preferences"]},
            "hyperparameters": hp(seed, **HYPERPARAMETERS["dpo"]),
        },
    }  # fmt: skip


def second_specs(datasets: dict[str, str], seed: int, jobs: dict) -> Specs:
    """The jobs that start from a model of the first ones."""
    reversal = {"base_model_id": jobs[("llama", "full SFT", seed)]["result_model_id"]}
    pretrained = {"base_model_id": jobs[("transformer", "causal_lm", seed)]["result_model_id"]}
    encoding, few = datasets["encoding"], datasets["reversal-few"]
    return {
        ("llama", "full SFT -> encode, full", seed): sft(encoding, "encode, full", seed) | reversal,
        ("llama", "full SFT -> encode, LoRA", seed):
            sft(encoding, "encode, LoRA", seed, **LORA) | reversal,
        ("transformer", "causal_lm -> SFT", seed): sft(few, "few", seed) | pretrained,
    }  # fmt: skip


# What the models of each row are asked, by (experiment, row): the task of their prompts.
# The reversal models are asked to encode too: the encoding rows' figures before training.
ASKED = {
    ("llama", "full SFT"): ("reverse", "encode"),
    ("llama", "full SFT -> encode, full"): ("encode",),
    ("llama", "full SFT -> encode, LoRA"): ("encode",),
    ("transformer", "scratch"): ("reverse",),
    ("transformer", "causal_lm -> SFT"): ("reverse",),
}


def exact_match(client: httpx.Client, model_id: str, task: str, strings: list[str]) -> float:
    """The share of the prompts whose greedy answer is right, exactly."""

    def right(letters: str) -> bool:
        body = {"messages": [asked(task, letters)], "max_tokens": MAX_TOKENS, "temperature": 0}
        response = client.post(f"/v1/models/{model_id}/generate", json=body)
        response.raise_for_status()
        return response.json()["text"].strip() == ANSWERS[task](letters)

    with ThreadPoolExecutor(os.cpu_count()) as pool:
        return statistics.mean(pool.map(right, strings))


def reference_margin(client: httpx.Client, model_id: str, directory: Path, lines: list) -> float:
    """DPO's `margin` (the preferred answer's log-likelihood minus the other's, mean over the
    pairs) of the test pairs under the reference, which the job reports for validation only:
    computed here, on the model downloaded, with the job's own functions."""
    path = directory / f"{model_id}.safetensors"
    download = client.get(f"/v1/models/{model_id}/download", params={"format": "safetensors"})
    download.raise_for_status()
    path.write_bytes(download.content)
    model = LanguageModel(path)
    pairs = [
        dpo.encode_pair(model.tokenizer, PreferenceExample(
            input=(Message(**line["input"]["messages"][0]),),
            preferred=line["preferred_output"][0]["content"],
            non_preferred=line["non_preferred_output"][0]["content"],
        ))
        for line in lines
        if line["split"] == "test"
    ]  # fmt: skip
    likelihoods = dpo.reference_likelihoods(
        model.network, pairs, model.tokenizer.pad_id, 32, torch.device("cpu")
    )
    return (likelihoods[:, 0] - likelihoods[:, 1]).mean().item()


def named(spec: dict, datasets: dict[str, str]) -> dict:
    """The spec as the report shows it: its datasets by their uploads' names, not ids."""
    text = json.dumps(spec)
    for name, dataset_id in datasets.items():
        text = text.replace(dataset_id, f"<upload {name}>")
    return json.loads(text)


def import_base(client: httpx.Client) -> str:
    response = client.post("/v1/models/import", data={"hf_model": LLAMA_NAME})
    response.raise_for_status()
    return response.json()["id"]


def run_experiments(client: httpx.Client, seeds: list[int]) -> dict:
    """The jobs (the second ones start from models of the first), then the answers of their
    models and of the imported base to the test prompts."""
    runner, strings = Runner(client), Strings.drawn()
    files = dataset_files(strings)
    with tempfile.TemporaryDirectory(prefix="tunery-bench-sft-") as tmp:
        directory = Path(tmp)
        datasets = {name: upload(client, directory, name, *file) for name, file in files.items()}
        first = {key: spec for s in seeds for key, spec in first_specs(datasets, s).items()}
        jobs = runner.run(first)
        second = {key: spec for s in seeds for key, spec in second_specs(datasets, s, jobs).items()}
        jobs |= runner.run(second)
        base = import_base(client)
        margin = reference_margin(client, base, directory, files["preferences"][1])
    exact = {
        (*key, task): exact_match(client, job["result_model_id"], task, strings.test)
        for key, job in jobs.items()
        for task in ASKED.get(key[:2], ())
    }
    return {
        "jobs": jobs,
        "specs": {key: named(spec, datasets) for key, spec in (first | second).items()},
        "exact": exact,
        "base_exact": exact_match(client, base, "reverse", strings.test),
        "reference_test_margin": margin,
    }


def exact_of(results: dict, experiment: str, row: str, task: str) -> list[float]:
    """The exact match of the models of (experiment, row) asked to `task`, in seed order."""
    found = results["exact"]
    return [found[k] for k in sorted(found) if (k[0], k[1], k[3]) == (experiment, row, task)]


def llama_section(results: dict) -> tuple[list[str], list[tuple[str, bool]]]:
    jobs, base = results["jobs"], results["base_exact"]
    reversed_after = exact_of(results, "llama", "full SFT", "reverse")
    encoded_before = exact_of(results, "llama", "full SFT", "encode")
    lines = [
        "## 1. A tiny Llama: full SFT, then full SFT against LoRA", "",
        f"`{LLAMA_NAME}`: `tests.tiny_lm.save_tiny_causal_lm` (Llama, width 64, 2 layers, "
        "4 heads, a byte-level BPE of 400 tokens; random weights, seed 0), imported "
        "(`POST /v1/models/import`) for its figures before training. Full SFT on "
        f"{TRAIN_EXAMPLES} reversals; then, from each seed's reversal model, full SFT and LoRA "
        f"(r={LORA['lora_rank']}, alpha {LORA['lora_alpha']}, every linear layer, merged) on "
        f"{TRAIN_EXAMPLES} encodings, with the same budget. LoRA starts from a trained model, "
        "as LoRA is meant to: on the random one, the output layer it leaves alone (tied to the "
        "input embeddings) has weights of standard deviation 0.02, which keep every logit "
        "near 0 whatever the hidden state (in development runs its validation loss stayed "
        "above 5 nats).", "",
        "| model | asked to | trained parameters | test exact match before | after "
        "| per seed (after) | test token accuracy |", "|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    rows = (
        ("random-weight Llama -> full SFT", "full SFT", "reverse", f"{base * 100:.1f} (the base)"),
        ("reversal model -> full SFT", "full SFT -> encode, full", "encode", cell(encoded_before)),
        (f"reversal model -> LoRA r={LORA['lora_rank']}", "full SFT -> encode, LoRA", "encode",
         cell(encoded_before)),
    )  # fmt: skip
    for name, row, task, before in rows:
        after = exact_of(results, "llama", row, task)
        trained = int(values(jobs, "llama", row, "trained_parameters")[0])
        total = int(values(jobs, "llama", row, "parameters")[0])
        accuracy = values(jobs, "llama", row, "test_token_accuracy")
        lines.append(
            f"| {name} | {task} | {trained:,} of {total:,} | {before} | {cell(after)} "
            f"| {per_seed(after)} | {cell(accuracy)} |"
        )
    full, lora = (
        statistics.mean(exact_of(results, "llama", f"full SFT -> encode, {kind}", "encode"))
        for kind in ("full", "LoRA")
    )
    reversal, before = statistics.mean(reversed_after), statistics.mean(encoded_before)
    checks = [
        (f"full SFT takes the random-weight Llama from {base:.0%} to >= 80% exact reversals "
         f"({reversal:.1%})", reversal >= 0.8 and reversal > base),
        (f"LoRA raises the reversal model's exact encodings by >= 30 points ({before:.1%} -> "
         f"{lora:.1%})", lora - before >= 0.3),
        (f"full SFT raises them by >= 30 points ({before:.1%} -> {full:.1%})",
         full - before >= 0.3),
    ]  # fmt: skip
    return [*lines, ""], checks


def transformer_section(results: dict) -> tuple[list[str], list[tuple[str, bool]]]:
    jobs = results["jobs"]
    before = values(jobs, "transformer", "causal_lm", "initial_val_perplexity")
    after = values(jobs, "transformer", "causal_lm", "val_perplexity")
    scratch = exact_of(results, "transformer", "scratch", "reverse")
    tuned = exact_of(results, "transformer", "causal_lm -> SFT", "reverse")
    lines = [
        f"## 2. tunery's transformer: causal-LM pretraining, then SFT on {FEW_EXAMPLES} "
        "examples", "",
        f"`causal_lm` pretraining on {CORPUS[0]} lines of the task written out as text "
        "(`reverse b f c : c f b`, uploaded with task `pretraining`; other strings than the "
        f"fine-tunes'), then `sft` on {FEW_EXAMPLES} chat examples (`base_model_id` the "
        "pretrained model), against `sft` from random init (`model` the same transformer, its "
        "tokenizer trained on those examples) on the same examples with the same budget.", "",
        "Validation perplexity on the corpus, untrained -> pretrained: "
        + ", ".join(f"{b:.1f} -> {a:.2f}" for b, a in zip(before, after, strict=True))
        + " (the letters of a string are random: about half the tokens cannot be predicted).",
        "", "| model | test exact match | per seed | test token accuracy |", "|---|---|---|---|",
    ]  # fmt: skip
    for name, row, exact in (("random init -> SFT", "scratch", scratch),
                             ("causal_lm -> SFT", "causal_lm -> SFT", tuned)):  # fmt: skip
        accuracy = values(jobs, "transformer", row, "test_token_accuracy")
        lines.append(f"| {name} | {cell(exact)} | {per_seed(exact)} | {cell(accuracy)} |")
    gain = (statistics.mean(tuned) - statistics.mean(scratch)) * 100
    checks = [
        (f"the pretrained transformer beats the one from random init ({gain:+.1f} points)",
         gain > 0),
        ("causal_lm pretraining lowers the corpus's validation perplexity",
         all(a < b for a, b in zip(after, before, strict=True))),
    ]  # fmt: skip
    return [*lines, ""], checks


def dpo_section(results: dict) -> tuple[list[str], list[tuple[str, bool]]]:
    def of(metric: str) -> list[float]:
        return values(results["jobs"], "dpo", "dpo", metric)

    reference = results["reference_test_margin"]
    lines = [
        "## 3. DPO on held-out preference pairs", "",
        f"`dpo` (beta 0.1) of the random-weight Llama (the reference: its weights, as "
        f"imported) on {PREFERENCE_PAIRS} pairs, the reversal preferred over a copy of the "
        "string (`reverse b f c`: `c f b` over `b f c`); the validation and test pairs ask "
        "about held-out strings. Margin: the preferred answer's log-likelihood minus the "
        "other's, mean over the pairs, in nats. Reward accuracy: the share of pairs whose "
        "preferred answer gained more over the reference, so 0 before training by definition. "
        "Before, on validation: the job's epoch 0; on test: computed by the bench, with "
        "`trainer.methods.dpo`'s functions, on the imported base downloaded (the job reports "
        "the test split after training only).", "",
        "| | validation margin | validation reward accuracy (%) | test margin "
        "| test reward accuracy (%) |", "|---|---|---|---|---|",
        f"| before (the reference) | {cell(of('initial_validation_margin'), 1, 2)} | 0 "
        f"| {reference:.2f} | 0 |",
        f"| after `dpo` | {cell(of('validation_margin'), 1, 2)} "
        f"| {cell(of('validation_reward_accuracy'))} | {cell(of('test_margin'), 1, 2)} "
        f"| {cell(of('test_reward_accuracy'))} |",
    ]  # fmt: skip
    accuracy = statistics.mean(of("test_reward_accuracy"))
    gained = zip(of("validation_margin"), of("initial_validation_margin"), strict=True)
    checks = [
        ("dpo raises the test margin over the reference's, every seed",
         min(of("test_margin")) > reference),
        ("dpo raises the validation margin, every seed", all(a > b for a, b in gained)),
        (f"dpo's test reward accuracy >= 80% ({accuracy:.1%})", accuracy >= 0.8),
    ]  # fmt: skip
    return lines, checks


def choices() -> str:
    grids = "; ".join(
        f"{name} {', '.join(f'{lr:g}' for lr in grid)} -> "
        f"{HYPERPARAMETERS[name]['learning_rate']:g}"
        for name, grid in GRIDS.items()
    )
    return (
        "Hyperparameters (the specs below): epochs and batch sizes fixed in advance, but for "
        "the reversal's 20 epochs: 12 in a first run, where seed 2's validation loss stopped "
        "at 0.23, half learnt (at 20 epochs, 0.002). Each learning rate is the one of the "
        "lowest final validation loss (the job's own validation split, never test) in a grid "
        "run on seed 0 while the bench was written (the reversal's at 12 epochs; the "
        "encodings' from the 20-epoch reversal model): " + grids + "."
    )


def report(results: dict, seeds: list[int], elapsed_s: float) -> tuple[str, list[tuple[str, bool]]]:
    lines = header("sft", seeds, elapsed_s, "Causal-LM fine-tuning results")
    lines += [
        f"The tasks: strings of 3 to 5 of the letters `{' '.join(LETTERS)}`, written with "
        "spaces between them, to `reverse` (`reverse b f c` -> `c f b`) or `encode` (reverse, "
        "and each letter moved one on, the last to the first: `encode b f c` -> `d g c`). The "
        f"bench draws the strings (seed {DATA_SEED}, no palindromes) and holds {HELD_OUT} out "
        f"for validation and {HELD_OUT} for test, which no training or pretraining reads; each "
        "file assigns its examples with `split`. Exact match: the greedy answer "
        f"(`POST /v1/models/{{id}}/generate`, temperature 0, at most {MAX_TOKENS} tokens), "
        "stripped, is the right one, over the test prompts.", "",
        f"The uploads (`<upload NAME>` in the specs): `reversal` and `encoding`, "
        f"{TRAIN_EXAMPLES} chat examples each to train on; `reversal-few`, the first "
        f"{FEW_EXAMPLES} of them; `preferences`, {PREFERENCE_PAIRS} pairs; each with the "
        "held-out strings for validation and test; and `corpus`, "
        f"{'/'.join(map(str, CORPUS))} train/validation/test lines of text.", "",
        choices(), "",
    ]  # fmt: skip
    checks = []
    for section in (llama_section, transformer_section, dpo_section):
        section_lines, section_checks = section(results)
        lines += section_lines
        checks += section_checks
    lines += checks_and_specs(checks, results["specs"], seeds[0])
    return "\n".join(lines) + "\n", checks


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="tunery-bench-llama-") as tmp:
        directory = save_tiny_causal_lm(Path(tmp) / LLAMA_NAME, "llama")
        # The embedded service's API and worker inherit this environment: they load the tiny
        # Llama by its name.
        configured = json.loads(os.environ.get("TUNERY_HF_MODEL_DIRS") or "{}")
        os.environ["TUNERY_HF_MODEL_DIRS"] = json.dumps(configured | {LLAMA_NAME: str(directory)})
        bench_main(__doc__.splitlines()[0], "bench.sft", run_experiments, report)


if __name__ == "__main__":
    main()
