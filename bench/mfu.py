"""Model FLOPs utilisation (MFU) of the transformer's causal-LM pretraining: a job through the
service beside the same training in a plain PyTorch loop, and both against the machine's peak.

The job is docs/RESULTS.md's `causal_lm` pretraining (`bench.transfer.text_specs`: the
`transformer` with d_model 64, 2 layers, 4 heads, 64 tokens, a BPE vocabulary of 2,000, on
`builtin:bbc-news`, batch 32, Adam, cosine schedule), for `--epochs` epochs instead of 3 to
keep the run short. It is submitted through the HTTP API to a service on Postgres and Redis
(`bench.timing.postgres_redis_stack`); the plain loop trains the same model (the registry's
`build_trunk` and a `Linear` head), on the same token chunks (the same tokenizer trained on the
same texts), with the same batches, optimiser, schedule and thread count, in a new interpreter
with the worker's environment (see `bench.overhead` for why a new one).

Throughput comes from the end of epoch 1 to the end of the last epoch: for the job, the
timestamps of its own per-epoch `loss`/`train` metric points (the trainer's clock); for the
loop, `time.perf_counter()` at the same place. Each epoch in the window trains on every
training chunk of T + 1 tokens (T = max_length input tokens, each with its next-token target)
and then, as the trainer does, evaluates the whole validation split. Model FLOPs in the window
are counted by `trainer.flops`: 6·N + 12·L·H·Q·T per training token and 2·N + 4·L·H·Q·T
(the forward pass) per validation token; achieved FLOP/s is that over the window's seconds.

Peak: on the CPU, measured here, as the best rate of a large fp32 matmul, and of a bf16 one,
with the trainer's torch thread count, before and after the runs (the better of the two
counts); MFU is given against the peak of the precision trained in (fp32 on the CPU unless
`--precision bf16`) and against the fastest. On CUDA, the datasheet's dense bf16 peak of the
GPU (`trainer.flops.peak_bf16_flops`), a measured bf16 matmul beside it.

Run: `.venv/bin/python -m bench.mfu` (about 4 minutes on 2 cores).
"""

import argparse
import json
import math
import re
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from statistics import median

import httpx
import torch
import torch.nn.functional as F
from torch import nn

from bench.overhead import CpuSampler, trainer_threads
from bench.pretraining import text_specs
from bench.timing import (
    Row,
    epoch_ends,
    machine,
    metric_points,
    postgres_redis_stack,
    submit,
    table,
    wait_succeeded,
)
from tests.stack import Stack
from trainer.architectures import build_trunk
from trainer.architectures.transformer import TransformerParams
from trainer.data import splits_for
from trainer.flops import TransformerFlops, peak_bf16_flops, transformer_flops
from trainer.text import token_stream, train_tokenizer


def job_spec(epochs: int, device: str, precision: str, params: dict | None = None) -> dict:
    """docs/RESULTS.md's causal_lm pretraining, for `epochs` epochs on `device`."""
    spec = text_specs(0)["causal_lm"]
    model = spec["model"] | {"params": spec["model"]["params"] | (params or {})}
    mixed = {"fp32": "no", "bf16": "bf16"}[precision]
    return spec | {
        "name": "mfu-causal-lm",
        "model": model,
        "hyperparameters": spec["hyperparameters"] | {"epochs": epochs, "mixed_precision": mixed},
        "resources": {"device": device},
    }


@dataclass(frozen=True)
class Run:
    """One side's training: what its window held and how long it took."""

    train_rows: int  # chunks of T + 1 tokens trained on per epoch
    validation_rows: int  # evaluated per epoch
    vocab_size: int  # the tokenizer's
    epochs: int  # in the window: every epoch after the first
    seconds: float
    cpu_seconds: float  # of the trainer (the loop) in the window

    def tokens_per_second(self, t: int) -> float:
        return self.epochs * self.train_rows * t / self.seconds

    def flops(self, flops: TransformerFlops) -> float:
        """Model FLOPs of the window: training, then evaluation, in every epoch."""
        t = flops.sequence_length
        per_epoch = t * (
            self.train_rows * flops.training_per_token
            + self.validation_rows * flops.forward_per_token
        )
        return self.epochs * per_epoch

    def flops_per_second(self, flops: TransformerFlops) -> float:
        return self.flops(flops) / self.seconds


EXAMPLES = re.compile(r"causal_lm: (\d+) training and (\d+) validation examples")


def job_examples(client: httpx.Client, job_id: str) -> tuple[int, int]:
    """The training and validation chunks the job reported in its log."""
    events = client.get(f"/v1/jobs/{job_id}/events", params={"limit": 1000})
    events.raise_for_status()
    for event in events.json()["data"]:
        if found := EXAMPLES.search(event["message"]):
            return int(found[1]), int(found[2])
    raise RuntimeError(f"job {job_id} logged no example counts")


def service_run(client: httpx.Client, stack: Stack, spec: dict, vocab_size: int) -> Run:
    job_id = submit(client, spec)
    sampler = CpuSampler(stack, job_id)
    sampler.start()
    try:
        wait_succeeded(client, job_id, poll_s=2)
    finally:
        sampler.stop.set()
        sampler.join()
    ends = [end.time for end in epoch_ends(metric_points(client, job_id))]
    if len(ends) < 2:
        raise ValueError("the window needs at least 2 epochs")
    train_rows, validation_rows = job_examples(client, job_id)
    trainer_cpu, _others = sampler.between(ends[0], ends[-1])
    return Run(
        train_rows, validation_rows, vocab_size, len(ends) - 1, ends[-1] - ends[0], trainer_cpu
    )


def _lr_factor(step: int, warmup: int, total: int) -> float:
    """The trainer's schedule: linear warm-up, then cosine to zero."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def plain_run(spec: dict, threads: int) -> Run:
    """`spec` trained in a hand-written loop in this process, `threads` torch threads."""
    torch.set_num_threads(threads)
    hp, device = spec["hyperparameters"], torch.device(spec["resources"]["device"])
    params = TransformerParams(**spec["model"]["params"])
    torch.manual_seed(hp["seed"])
    generator = torch.Generator().manual_seed(hp["seed"])
    _, train, validation, _ = splits_for(spec["data"]["train"], None, None, hp["seed"])
    tokenizer = train_tokenizer(train.texts, params.vocab_size)
    vocab, length = tokenizer.get_vocab_size(), params.max_length + 1

    def chunks(texts: tuple[str, ...]) -> torch.Tensor:
        stream = token_stream(tokenizer, texts)
        return stream[: len(stream) // length * length].view(-1, length)

    x, x_val = chunks(train.texts), chunks(validation.texts)
    _, backbone = build_trunk("transformer", params.model_dump(), [params.max_length], None, vocab)
    head = nn.Linear(backbone.feature_dim, vocab)
    model = nn.ModuleList([backbone, head]).to(device)
    batch, epochs = hp["batch_size"], hp["epochs"]
    optimizer = torch.optim.Adam(model.parameters(), lr=hp.get("learning_rate", 1e-3))
    total = -(-len(x) // batch) * epochs
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: _lr_factor(step, hp["warmup_steps"], total)
    )
    bf16 = hp["mixed_precision"] == "bf16"

    def loss_of(rows: torch.Tensor) -> torch.Tensor:
        rows = rows.to(device)
        logits = head(backbone.forward_sequence(rows[:, :-1]))
        return F.cross_entropy(logits.float().flatten(0, 1), rows[:, 1:].flatten())

    ends = []  # (wall, CPU) seconds at each epoch's end
    for _epoch in range(epochs):
        model.train()
        loss_sum = 0.0
        for index in torch.randperm(len(x), generator=generator).split(batch):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                loss = loss_of(x[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            loss_sum += loss.item()
        model.eval()  # the trainer validates without autocast too
        with torch.no_grad():
            _validation_loss = sum(
                loss_of(x_val[i : i + batch]).item() * len(x_val[i : i + batch])
                for i in range(0, len(x_val), batch)
            )
        ends.append((time.perf_counter(), time.process_time()))
    (start, start_cpu), (end, end_cpu) = ends[0], ends[-1]
    return Run(len(x), len(x_val), vocab, len(ends) - 1, end - start, end_cpu - start_cpu)


def fresh_plain_run(spec: dict, threads: int, env: dict[str, str]) -> Run:
    """`plain_run` in a new interpreter with the worker's environment, as a trainer runs."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.mfu", "--plain", json.dumps(spec), "--threads", str(threads)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return Run(**json.loads(done.stdout.splitlines()[-1]))


def matmul_peak(dtype: torch.dtype, device: torch.device, seconds: float = 2.0) -> float:
    """The best FLOP/s of a large square matmul over `seconds`, with this process's torch
    threads: the most this machine does, at `dtype`."""
    n = 8192 if device.type == "cuda" else 2048
    repeats = 20 if device.type == "cuda" else 1
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)

    def timed() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(repeats):
            a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    timed()  # warm-up
    best, deadline = math.inf, time.monotonic() + seconds
    while time.monotonic() < deadline:
        best = min(best, timed())
    return 2 * n**3 * repeats / best


@dataclass(frozen=True)
class Peak:
    label: str
    flops: float  # FLOP/s


def measured_peaks(device: torch.device) -> dict[str, float]:
    """fp32 and bf16 matmul peaks (FLOP/s); on CUDA bf16 only."""
    dtypes = {"bf16": torch.bfloat16}
    if device.type == "cpu":
        dtypes = {"fp32": torch.float32} | dtypes
    return {name: matmul_peak(dtype, device) for name, dtype in dtypes.items()}


def _tflops(flops: float) -> str:
    return f"{flops / 1e12:.4f}"


def report(
    service: list[Run],
    plain: list[Run],
    flops: TransformerFlops,
    peaks: list[Peak],
    spec: dict,
    peak_runs: list[dict[str, float]],
) -> str:
    t = flops.sequence_length
    batch = spec["hyperparameters"]["batch_size"]
    rounds = len(service)

    def pair(figure: str, value, fmt) -> Row:
        ours, theirs = median(value(r) for r in service), median(value(r) for r in plain)
        return Row(figure, fmt(ours), fmt(theirs), f"{ours / theirs:.3f}")

    rows = [
        pair(f"training tokens/s, median of {rounds}", lambda r: r.tokens_per_second(t),
             lambda v: f"{v:,.0f}"),
        pair(f"achieved model TFLOP/s, median of {rounds}", lambda r: r.flops_per_second(flops),
             _tflops),
    ]  # fmt: skip
    for peak in peaks:
        rows.append(Row(f"peak TFLOP/s: {peak.label}", _tflops(peak.flops)))
    for peak in peaks:
        rows.append(
            pair(f"MFU vs {peak.label}", lambda r, p=peak: r.flops_per_second(flops) / p.flops,
                 lambda v: f"{v:.2%}")
        )  # fmt: skip
    rows.append(
        pair("CPU-seconds of the trainer (loop) per second of the window",
             lambda r: r.cpu_seconds / r.seconds, lambda v: f"{v:.2f}")
    )  # fmt: skip
    first = service[0]
    window = first.flops(flops)
    details = [
        f"- Model: {json.dumps(spec['model']['params'])}, tokenizer vocabulary "
        f"{first.vocab_size:,}; N = {flops.parameters:,} non-embedding parameters (blocks, "
        f"final layer norm, the untied {first.vocab_size:,}-way LM head); L = {flops.layers}, "
        f"H = {flops.heads}, Q = {flops.head_dim}, T = {t}.",
        f"- FLOPs per token: training 6·N + 12·L·H·Q·T = {flops.training_per_token:,}; "
        f"validation (forward) {flops.forward_per_token:,}.",
        f"- Tokens per step: batch {batch} x T {t} = {batch * t:,}. Per epoch: "
        f"{first.train_rows:,} training and {first.validation_rows:,} validation chunks "
        "(the same on both sides, checked); "
        f"window {first.epochs} epoch(s), {first.epochs * first.train_rows * t:,} training "
        f"tokens, {window / 1e12:.3f} TFLOP (validation "
        f"{first.epochs * first.validation_rows * t * flops.forward_per_token / window:.1%}).",
        "- Per run, in the order run: service "
        + ", ".join(f"{r.seconds:.1f} s" for r in service)
        + "; plain "
        + ", ".join(f"{r.seconds:.1f} s" for r in plain)
        + ".",
        "- Peaks measured (TFLOP/s), before and after the runs: "
        + "; ".join(
            ", ".join(f"{name} {_tflops(v)}" for name, v in run.items()) for run in peak_runs
        )
        + ".",
    ]
    return "\n".join([table(rows), "", *details])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1, help="runs of each side, alternating")
    parser.add_argument("--epochs", type=int, default=2, help="the window is all but the first")
    parser.add_argument("--threads", type=int, default=1, help="torch threads on both sides")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16"),
        default="auto",
        help="auto: bf16 autocast on CUDA, fp32 on the CPU (the trainer's default)",
    )
    parser.add_argument("--params", type=json.loads, help="JSON: transformer params to override")
    parser.add_argument("--plain", metavar="SPEC", help="used by the benchmark itself")
    args = parser.parse_args()
    if args.plain:
        print(json.dumps(asdict(plain_run(json.loads(args.plain), args.threads))))
        return
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(args.device)
    precision = args.precision
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    spec = job_spec(args.epochs, device.type, precision, args.params)
    torch.set_num_threads(args.threads)
    where = (
        torch.cuda.get_device_name() if device.type == "cuda" else f"{args.threads} torch thread(s)"
    )
    print(f"# bench.mfu: {machine()}; {device.type}, {where}, {precision}")

    peak_runs = [measured_peaks(device)]
    env = {"OMP_NUM_THREADS": str(args.threads)}
    service, plain = [], []
    with postgres_redis_stack(concurrency=1, extra_env=env) as stack:
        if device.type == "cpu" and (threads := trainer_threads(stack.env)) != args.threads:
            raise RuntimeError(f"the trainer would get {threads} threads, not {args.threads}")
        with stack.client() as client:
            client.timeout = httpx.Timeout(120)
            for round_ in range(1, args.rounds + 1):
                plain.append(fresh_plain_run(spec, args.threads, stack.env))
                service.append(service_run(client, stack, spec, plain[-1].vocab_size))
                print(
                    f"round {round_}: service {service[-1].seconds:.1f} s, plain "
                    f"{plain[-1].seconds:.1f} s for the window",
                    file=sys.stderr,
                )
    peak_runs.append(measured_peaks(device))
    if any((s.train_rows, s.validation_rows) != (p.train_rows, p.validation_rows)
           for s, p in zip(service, plain, strict=True)):  # fmt: skip
        raise RuntimeError("the job and the loop trained on different chunks")

    best = {name: max(run[name] for run in peak_runs) for name in peak_runs[0]}
    flops = transformer_flops(spec["model"]["params"], plain[0].vocab_size)
    matmul = "8192² matmul" if device.type == "cuda" else "2048² matmul"
    if device.type == "cuda":
        datasheet = peak_bf16_flops(torch.cuda.get_device_name())
        peaks = [Peak(f"measured bf16 {matmul}", best["bf16"])]
        if datasheet is not None:
            peaks.insert(0, Peak("datasheet dense bf16", datasheet))
    else:
        threads = f"{args.threads} thread(s)"
        peaks = [Peak(f"measured {precision} {matmul}, {threads} (trained in {precision})",
                      best[precision])]  # fmt: skip
        other = "bf16" if precision == "fp32" else "fp32"
        if best[other] > best[precision]:
            peaks.append(Peak(f"measured {other} {matmul}, {threads} (the fastest)", best[other]))
    print(report(service, plain, flops, peaks, spec, peak_runs))


if __name__ == "__main__":
    main()
