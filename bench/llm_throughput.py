"""Causal language models, through the service beside plain code on the same model: SFT
training tokens/s against a plain PyTorch loop, and generation tokens/s through
`POST /v1/models/{id}/generate` against `transformers`' `model.generate` in this process, at
batch 1, with the time to the first streamed token.

The model is a random-weight Llama saved here (`tests.tiny_lm`; nothing is downloaded), of
`--width` features and `--layers` blocks (19M parameters at the defaults), configured in the
service as `bench-llama`.

Training: an `sft` job (full fine-tuning, and LoRA of rank 16 on every linear layer) on chat
examples written here (a list of words, then the words reversed), against a hand-written loop
in a new process that loads the same directory with `AutoModelForCausalLM.from_pretrained`,
reads the same examples as the same token ids (the base's chat template, assistant tokens
trained) in batches of the same size, steps Adam at the same learning rate and validates after
every epoch on the same split. The window, the rounds (the two sides of a round at the same
time, a core each, one torch thread each) and the verdict (the median of the rounds' ratios)
are `bench.overhead`'s; tokens are the examples' tokens without padding.

Generation: the base imported as a tunery model (`POST /v1/models/import`) answers prompts
greedily through the API (torch threads of the API server: one), and the same prompts go to
`model.generate` (greedy, one thread) in this process, one side after the other, prompt by
prompt. Both must give the same text. Tokens/s is the answer's tokens over the request's
wall time (HTTP, tokenizing, the prompt's forward pass and every step); the verdict is the
median of the paired ratios. The time to the first streamed token is from sending a
`stream: true` request to reading its first `text` event, beside `model.generate` of one token.

Run: `.venv/bin/python -m bench.llm_throughput` (about 10 minutes on 2 cores).
"""

import argparse
import io
import json
import random
import sys
import tempfile
import time
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from statistics import median

import httpx
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from bench.overhead import Case, PlainRun, Throughput, compare, plain_throughput, trainer_threads
from bench.timing import Row, machine, percentile, postgres_redis_stack, table
from tests.stack import Stack
from tests.tiny_lm import CORPUS, save_tiny_causal_lm
from trainer.card import TrunkCard
from trainer.chat_format import ChatTokenizer, Encoded
from trainer.readers.chat import ChatExample, Message

TRAINING_TARGET = 0.95
GENERATION_TARGET = 0.9
BASE_NAME = "bench-llama"
IGNORED = -100
WORDS = sorted(set(" ".join(CORPUS[:2]).replace("?", "").replace(",", "").split()))
EXAMPLES = {"train": 256, "validation": 32, "test": 32}


@dataclass(frozen=True)
class SftCase(Case):
    """`bench.overhead`'s case as an `sft` job on the configured base: `train` is the upload's
    id, `data_file` the same file for the plain loop."""

    base_dir: str = ""
    data_file: str = ""
    lora_rank: int | None = None

    def spec(self) -> dict:
        lora = {} if self.lora_rank is None else {"lora_rank": self.lora_rank, "lora_alpha": 32}
        return super().spec() | {"method": {"name": "sft", "params": lora}}


def chat_lines(seed: int = 0) -> list[dict]:
    """Chat examples of 4 to 24 words and their reversal, each with its split."""
    rng, lines = random.Random(seed), []
    for split, count in EXAMPLES.items():
        for _ in range(count):
            words = [rng.choice(WORDS) for _ in range(rng.randint(4, 24))]
            messages = [
                {"role": "user", "content": "reverse: " + " ".join(words)},
                {"role": "assistant", "content": " ".join(reversed(words))},
            ]
            lines.append({"messages": messages, "split": split})
    return lines


def encoded_splits(base_dir: Path, data_file: Path) -> tuple[dict[str, list[Encoded]], int]:
    """The examples by split as the `sft` job reads them (the base's chat template, its
    assistant tokens trained), and the padding id."""
    from trainer.architectures.hf_causal_lm import tokenizer_settings

    special_tokens, template = tokenizer_settings(base_dir)
    card = TrunkCard(
        architecture="hf_causal_lm",
        params={"special_tokens": special_tokens, "chat_template": template},
        input_shape=[1024],
        tokenizer=(base_dir / "tokenizer.json").read_text(),
    )
    tokenizer = ChatTokenizer(card)
    splits: dict[str, list[Encoded]] = {name: [] for name in EXAMPLES}
    for line in map(json.loads, data_file.read_text().splitlines()):
        messages = tuple(Message(**m) for m in line["messages"])
        splits[line["split"]].append(tokenizer.encode(ChatExample(messages=messages)))
    return splits, tokenizer.pad_id


def padded_batch(rows: list[Encoded], pad_id: int) -> tuple[torch.Tensor, ...]:
    """(ids, attention mask, labels: the ids where trained, else ignored)."""
    width = max(len(row.ids) for row in rows)
    ids = torch.full((len(rows), width), pad_id)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORED)
    for i, row in enumerate(rows):
        n = len(row.ids)
        ids[i, :n], mask[i, :n] = torch.tensor(row.ids), 1
        labels[i, :n] = torch.where(torch.tensor(row.trained), ids[i, :n], IGNORED)
    return ids, mask, labels


def plain_sft(case: SftCase) -> PlainRun:
    """`case` as a hand-written loop: transformers' model, Adam, validation every epoch."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(case.seed)
    splits, pad_id = encoded_splits(Path(case.base_dir), Path(case.data_file))
    train, validation = splits["train"], splits["validation"]
    model = AutoModelForCausalLM.from_pretrained(case.base_dir)
    if case.lora_rank is not None:
        config = LoraConfig(
            r=case.lora_rank, lora_alpha=32, lora_dropout=0.1, target_modules="all-linear"
        )
        model = get_peft_model(model, config)
    trained = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trained, lr=case.learning_rate)
    generator = torch.Generator().manual_seed(case.seed)
    ends = []
    for _epoch in range(case.epochs):
        model.train()
        loss_sum = 0.0
        for index in torch.randperm(len(train), generator=generator).split(case.batch_size):
            ids, mask, labels = padded_batch([train[i] for i in index.tolist()], pad_id)
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.item()
        model.eval()
        with torch.no_grad():  # the validation loss and token accuracy, as the job reports
            loss_total, correct, tokens = 0.0, 0, 0
            for start in range(0, len(validation), case.batch_size):
                rows = validation[start : start + case.batch_size]
                ids, mask, labels = padded_batch(rows, pad_id)
                logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
                targets = labels[:, 1:]
                loss_total += F.cross_entropy(
                    logits.flatten(0, 1), targets.flatten(), reduction="sum"
                ).item()
                trained_tokens = targets != IGNORED
                correct += ((logits.argmax(-1) == targets) & trained_tokens).sum().item()
                tokens += trained_tokens.sum().item()
        ends.append((time.perf_counter(), time.process_time()))
    return PlainRun(ends, len(train), correct / tokens)


# --- generation ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    prompt_tokens: int
    tokens: int
    seconds: float
    text: str


def asked(words: str) -> list[dict]:
    return [{"role": "user", "content": f"reverse: {words}"}]


def service_answer(client: httpx.Client, model_id: str, words: str, max_tokens: int) -> Answer:
    body = {"messages": asked(words), "max_tokens": max_tokens, "temperature": 0}
    start = time.perf_counter()
    response = client.post(f"/v1/models/{model_id}/generate", json=body)
    seconds = time.perf_counter() - start
    response.raise_for_status()
    answer = response.json()
    usage = answer["usage"]
    return Answer(usage["prompt_tokens"], usage["completion_tokens"], seconds, answer["text"])


def first_streamed(client: httpx.Client, model_id: str, words: str, max_tokens: int) -> float:
    """Seconds from sending a streamed request to reading its first `text` event."""
    body = {"messages": asked(words), "max_tokens": max_tokens, "temperature": 0, "stream": True}
    start = time.perf_counter()
    with client.stream("POST", f"/v1/models/{model_id}/generate", json=body) as response:
        response.raise_for_status()
        lines = response.iter_lines()
        for line in lines:
            if line == "event: text":
                first = time.perf_counter() - start
                break
        else:
            raise RuntimeError("the stream sent no text")
        for _ in lines:  # read to the end, as a client would
            pass
    return first


def downloaded(client: httpx.Client, model_id: str, directory: Path) -> Path:
    """The model as the Hugging Face directory its download gives."""
    response = client.get(f"/v1/models/{model_id}/download", params={"format": "hf"})
    response.raise_for_status()
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        archive.extractall(directory)
    return directory


class InProcess:
    """`model.generate` on a Hugging Face directory, greedy, in this process; the prompt from
    the tokenizer's chat template."""

    def __init__(self, model_dir: Path) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)

    def answer(self, words: str, max_tokens: int) -> Answer:
        ids = self.tokenizer.apply_chat_template(
            asked(words), add_generation_prompt=True, return_tensors="pt", return_dict=True
        )["input_ids"]
        eos = self.tokenizer.eos_token_id
        start = time.perf_counter()
        out = self.model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=max_tokens,
            do_sample=False,
            eos_token_id=eos,
            pad_token_id=eos,
        )
        seconds = time.perf_counter() - start
        new = out[0, ids.shape[1] :].tolist()
        if new and new[-1] == eos:  # the service counts no end-of-text token either
            new = new[:-1]
        text = self.tokenizer.decode(new, skip_special_tokens=True)
        return Answer(ids.shape[1], len(new), seconds, text)


@dataclass
class GenerationRuns:
    service: list[Answer]
    in_process: list[Answer]
    first_token: list[float]  # streamed, through the service
    in_process_first_token: list[float]


def questions(count: int, seed: int = 1) -> list[str]:
    """Word lists that no training example was written from (another seed)."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 24))) for _ in range(count)]


def compare_generation(
    client: httpx.Client, model_id: str, model_dir: Path, count: int, max_tokens: int
) -> GenerationRuns:
    local = InProcess(model_dir)
    runs = GenerationRuns([], [], [], [])
    asked_words = questions(count)
    service_answer(client, model_id, asked_words[0], max_tokens)  # loads the model
    local.answer(asked_words[0], max_tokens)
    for words in asked_words:
        ours = service_answer(client, model_id, words, max_tokens)
        theirs = local.answer(words, max_tokens)
        if (ours.prompt_tokens, ours.text) != (theirs.prompt_tokens, theirs.text):
            raise RuntimeError(f"the answers to {words!r} differ: {ours}, {theirs}")
        runs.service.append(ours)
        runs.in_process.append(theirs)
        runs.first_token.append(first_streamed(client, model_id, words, max_tokens))
        runs.in_process_first_token.append(local.answer(words, 1).seconds)
        print(
            f"{words!r}: {ours.tokens} tokens, service {ours.tokens / ours.seconds:.1f}/s, "
            f"in-process {theirs.tokens / theirs.seconds:.1f}/s, first streamed token "
            f"{runs.first_token[-1] * 1000:.0f} ms",
            file=sys.stderr,
        )
    return runs


def fine_tuned_model(client: httpx.Client, case: SftCase) -> str:
    """The model of the last job of `case`."""
    jobs = client.get("/v1/jobs", params={"limit": 100}).json()["data"]
    named = [job for job in jobs if job["name"] == case.spec()["name"]]
    return max(named, key=lambda job: job["created_at"])["result_model_id"]


# --- report --------------------------------------------------------------------------------


def training_rows(
    runs: dict[str, tuple[list[Throughput], list[Throughput]]], tokens_per_example: float
) -> tuple[list[Row], list[str]]:
    rows, details = [], []
    for name, (service, plain) in runs.items():
        ratios = [s.per_second / p.per_second for s, p in zip(service, plain, strict=True)]
        ratio = median(ratios)
        ours = median(t.per_second for t in service) * tokens_per_example
        theirs = median(t.per_second for t in plain) * tokens_per_example
        rows.append(
            Row(
                f"{name}: training tokens/s, median of {len(ratios)} rounds (ratio: median of "
                "the rounds' ratios)",
                f"{ours:,.0f}",
                f"{theirs:,.0f}",
                f"{ratio:.3f}",
                f"≥ {TRAINING_TARGET}",
                ratio >= TRAINING_TARGET,
            )
        )
        cpu = median(
            s.per_cpu_second / p.per_cpu_second for s, p in zip(service, plain, strict=True)
        )
        rows.append(Row(f"{name}: tokens per CPU-second of the trainer (loop), ratio", "-",
                        "-", f"{cpu:.3f}"))  # fmt: skip
        details.append(
            f"- {name}: per-round ratios {', '.join(f'{r:.3f}' for r in ratios)}; window "
            f"{service[0].samples:,} examples ({service[0].samples * tokens_per_example:,.0f} "
            f"tokens), median {median(t.seconds for t in service):.1f} s service, "
            f"{median(t.seconds for t in plain):.1f} s plain."
        )
    return rows, details


def generation_rows(runs: GenerationRuns) -> tuple[list[Row], list[str]]:
    def rate(answer: Answer) -> float:
        return answer.tokens / answer.seconds

    ratios = [rate(s) / rate(p) for s, p in zip(runs.service, runs.in_process, strict=True)]
    ratio = median(ratios)
    n = len(ratios)
    first, first_local = runs.first_token, runs.in_process_first_token
    rows = [
        Row(
            f"generation tokens/s at batch 1, greedy, median of {n} prompts (ratio: median of "
            "the paired ratios)",
            f"{median(map(rate, runs.service)):,.1f}",
            f"{median(map(rate, runs.in_process)):,.1f}",
            f"{ratio:.3f}",
            f"≥ {GENERATION_TARGET}",
            ratio >= GENERATION_TARGET,
        ),
        Row(
            "time to the first streamed token, ms, median (p90); baseline: `model.generate` "
            "of one token",
            f"{median(first) * 1000:.0f} ({percentile(first, 90) * 1000:.0f})",
            f"{median(first_local) * 1000:.0f} ({percentile(first_local, 90) * 1000:.0f})",
        ),
    ]
    tokens = [a.tokens for a in runs.service]
    details = [
        f"- generation: {min(tokens)} to {max(tokens)} tokens an answer (the same text on "
        f"both sides, every prompt); per-prompt ratios {', '.join(f'{r:.3f}' for r in ratios)}."
    ]
    return rows, details


def service_env(base_dir: Path) -> dict[str, str]:
    """The service's environment: one torch thread, the base configured as `BASE_NAME`."""
    return {
        "OMP_NUM_THREADS": "1",
        "TUNERY_HF_MODEL_DIRS": json.dumps({BASE_NAME: str(base_dir)}),
    }


@dataclass
class Measured:
    training: dict[str, tuple[list[Throughput], list[Throughput]]]
    generation: GenerationRuns
    tokens_per_example: float


def measure(
    stack: Stack,
    root: Path,
    base_dir: Path,
    rounds: int,
    prompts: int,
    max_tokens: int,
    epochs: int = 3,
) -> Measured:
    """Both comparisons on `stack` (started with `service_env(base_dir)`), files under `root`."""
    if trainer_threads(stack.env) != 1:
        raise RuntimeError("the trainer would not get one torch thread")
    torch.set_num_threads(1)
    data_file = root / "reversal.jsonl"
    data_file.write_text("".join(json.dumps(line) + "\n" for line in chat_lines()))
    splits, _pad = encoded_splits(base_dir, data_file)
    tokens_per_example = sum(len(r.ids) for r in splits["train"]) / len(splits["train"])
    with stack.client() as client, data_file.open("rb") as file:
        upload = client.post(
            "/v1/datasets",
            files={"file": (data_file.name, file)},
            data={"name": "reversal", "task": "chat"},
        )
        upload.raise_for_status()
        cases = tuple(
            SftCase(
                name,
                "hf_causal_lm",
                upload.json()["id"],
                epochs,
                batch_size=8,
                params={"base": BASE_NAME},
                learning_rate=1e-4,
                base_dir=str(base_dir),
                data_file=str(data_file),
                lora_rank=rank,
            )
            for name, rank in (("full fine-tuning", None), ("LoRA rank 16", 16))
        )
        training = compare(client, stack, cases, 1, rounds, module="bench.llm_throughput")
        model_id = fine_tuned_model(client, cases[0])
        model_dir = downloaded(client, model_id, root / "fine-tuned")
        generation = compare_generation(client, model_id, model_dir, prompts, max_tokens)
    return Measured(training, generation, tokens_per_example)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="training runs of each side")
    parser.add_argument("--prompts", type=int, default=20, help="generation prompts")
    parser.add_argument("--max-tokens", type=int, default=128, help="tokens an answer, at most")
    parser.add_argument("--width", type=int, default=512, help="the Llama's hidden size")
    parser.add_argument("--layers", type=int, default=8, help="the Llama's blocks")
    parser.add_argument("--plain", metavar="CASE", help="used by the benchmark itself")
    parser.add_argument("--threads", type=int, default=1, help="with --plain: torch threads")
    args = parser.parse_args()
    if args.plain:
        case = SftCase(**json.loads(args.plain))
        print(json.dumps(asdict(plain_throughput(case, args.threads, plain_sft))))
        return
    print(f"# bench.llm_throughput: {machine()}; one torch thread on each side")
    with tempfile.TemporaryDirectory(prefix="tunery-bench-llm-") as tmp:
        root = Path(tmp)
        base_dir = save_tiny_causal_lm(root / BASE_NAME, width=args.width, layers=args.layers)
        weights = load_file(str(base_dir / "model.safetensors"))
        parameters = sum(t.numel() for name, t in weights.items() if name != "lm_head.weight")
        with postgres_redis_stack(concurrency=1, extra_env=service_env(base_dir)) as stack:
            found = measure(stack, root, base_dir, args.rounds, args.prompts, args.max_tokens)
    rows, details = training_rows(found.training, found.tokens_per_example)
    more_rows, more_details = generation_rows(found.generation)
    print(
        f"Model: a random-weight Llama, {args.layers} blocks of {args.width} features, "
        f"{parameters:,} parameters; {found.tokens_per_example:.1f} tokens a training example."
    )
    print(table(rows + more_rows))
    print("\nPer run, in the order run:", *details, *more_details, sep="\n")


if __name__ == "__main__":
    main()
