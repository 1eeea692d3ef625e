"""Inference: ONNX exports against `predict`, and `predict` over HTTP against plain PyTorch.

Trains one small classifier per built-in architecture through the API, downloads each as ONNX
and runs it with onnxruntime beside `predict` on the same raw inputs (max |difference| of
the probabilities). Then, for the seed's CNN: single-sample latency (p50/p99) and batch-256
throughput over HTTP, beside the same model called in-process in plain PyTorch, and 16
concurrent single-sample clients (micro-batched) beside one client at a time.

Run: `.venv/bin/python -m bench.inference` (starts its own embedded service; about 3 min).
"""

import argparse
import io
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import onnxruntime
import torch
from tokenizers import Tokenizer

from bench.service import service
from trainer.artifact import load_predictor, read_card
from trainer.data import load_dataset
from trainer.text import encode

TEXT = {"vocab_size": 2000, "max_length": 64}
ARCHITECTURES = {
    "cnn": ({}, "builtin:digits"),
    "resnet": ({}, "builtin:digits"),
    "mlp": ({}, "builtin:breast-cancer"),
    "gru": (TEXT, "builtin:bbc-news"),
    "lstm": (TEXT, "builtin:bbc-news"),
    "transformer": (TEXT | {"d_model": 64}, "builtin:bbc-news"),
}


def train(client: httpx.Client) -> dict[str, str]:
    """One model per architecture: model ids by architecture."""
    jobs = {}
    for arch, (params, dataset) in ARCHITECTURES.items():
        spec = {
            "kind": "finetune",
            "model": {"architecture": arch, "params": params},
            "data": {"train": dataset},
            "hyperparameters": {"epochs": 10 if arch == "cnn" else 2},
        }
        response = client.post("/v1/jobs", json=spec)
        response.raise_for_status()
        jobs[arch] = response.json()["id"]
    models = {}
    for arch, job_id in jobs.items():
        while (job := client.get(f"/v1/jobs/{job_id}").json())["status"] in ("queued", "running"):
            time.sleep(1)
        if job["status"] != "succeeded":
            raise RuntimeError(f"{arch}: {job}")
        models[arch] = job["result_model_id"]
    return models


def onnx_agreement(client: httpx.Client, arch: str, model_id: str, scratch: Path) -> float:
    dataset = load_dataset(ARCHITECTURES[arch][1]).splits["test"]
    raw = list(dataset.texts[:64]) if dataset.texts else dataset.x[:64].tolist()
    answer = client.post(f"/v1/models/{model_id}/predict", json={"inputs": raw})
    answer.raise_for_status()
    onnx = client.get(f"/v1/models/{model_id}/download", params={"format": "onnx"})
    onnx.raise_for_status()
    path = scratch / f"{arch}.onnx"
    path.write_bytes(onnx.content)
    if dataset.texts:  # ONNX takes token ids: tokenize with the tokenizer in the model card
        card = read_card(downloaded(client, model_id, scratch))
        tokenizer = Tokenizer.from_str(card.tokenizer)
        inputs = encode(tokenizer, raw, card.input_shape[0]).numpy()
    else:
        inputs = np.asarray(raw, dtype=np.float32)
    session = onnxruntime.InferenceSession(str(path))
    probabilities, _ = session.run(None, {"inputs": inputs})
    return float(np.abs(probabilities - np.asarray(answer.json()["probabilities"])).max())


def downloaded(client: httpx.Client, model_id: str, scratch: Path) -> Path:
    path = scratch / f"{model_id}.safetensors"
    if not path.exists():
        path.write_bytes(client.get(f"/v1/models/{model_id}/download").content)
    return path


def percentiles(seconds: list[float]) -> tuple[float, float]:
    ms = sorted(s * 1000 for s in seconds)
    return statistics.median(ms), ms[int(0.99 * (len(ms) - 1))]


def timed(call, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return times


def latency_and_throughput(client: httpx.Client, model_id: str, scratch: Path) -> list[str]:
    digits = load_dataset("builtin:digits").splits["test"].x
    one, batch = digits[:1].tolist(), digits[:256]
    url = f"/v1/models/{model_id}/predict"
    network, _ = load_predictor(downloaded(client, model_id, scratch))

    def in_process(x: torch.Tensor) -> None:
        with torch.inference_mode():
            torch.softmax(network(x), dim=1).tolist()

    for _ in range(20):  # warm both up
        client.post(url, json={"inputs": one}).raise_for_status()
        in_process(digits[:1])
    http_one = percentiles(timed(lambda: client.post(url, json={"inputs": one}), 500))
    torch_one = percentiles(timed(lambda: in_process(digits[:1]), 500))
    batch_list = batch.tolist()

    def npy_request() -> None:
        body = io.BytesIO()
        np.save(body, batch.numpy())
        headers = {"content-type": "application/x-npy"}
        client.post(url, content=body.getvalue(), headers=headers).raise_for_status()

    def rate(call) -> float:
        return 256 / statistics.median(timed(call, 30))

    torch_rate = rate(lambda: in_process(batch))
    json_rate = rate(lambda: client.post(url, json={"inputs": batch_list}).raise_for_status())
    npy_rate = rate(npy_request)

    def clients(count: int, requests: int) -> float:
        def work() -> None:
            with httpx.Client(base_url=client.base_url, headers=client.headers) as own:
                for _ in range(requests):
                    own.post(url, json={"inputs": one}).raise_for_status()

        threads = [threading.Thread(target=work) for _ in range(count)]
        start = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return count * requests / (time.perf_counter() - start)

    sequential, concurrent = clients(1, 300), clients(16, 40)
    return [
        "| measure | tunery over HTTP | plain PyTorch in-process | ratio |",
        "|---|---|---|---|",
        f"| 1 sample, p50 latency | {http_one[0]:.2f} ms | {torch_one[0]:.2f} ms | "
        f"{http_one[0] / torch_one[0]:.1f}x |",
        f"| 1 sample, p99 latency | {http_one[1]:.2f} ms | {torch_one[1]:.2f} ms | "
        f"{http_one[1] / torch_one[1]:.1f}x |",
        f"| batch 256 as .npy, throughput | {npy_rate:,.0f} samples/s | "
        f"{torch_rate:,.0f} samples/s | {npy_rate / torch_rate:.0%} |",
        f"| batch 256 as JSON, throughput | {json_rate:,.0f} samples/s | "
        f"{torch_rate:,.0f} samples/s | {json_rate / torch_rate:.0%} |",
        "",
        f"Single samples over HTTP: {sequential:,.0f} requests/s from one client at a time, "
        f"{concurrent:,.0f} requests/s from 16 concurrent clients (micro-batched).",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running tunery; default: start an embedded one")
    parser.add_argument("--key", default=os.environ.get("TUNERY_API_KEY"), help="its API key")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="tunery-inference-"))
    with service(args.url, args.key) as client:
        models = train(client)
        lines = ["| architecture | max abs difference, ONNX vs predict (64 inputs) |"]
        lines.append("|---|---|")
        for arch, model_id in models.items():
            lines.append(f"| {arch} | {onnx_agreement(client, arch, model_id, scratch):.1e} |")
        lines += ["", *latency_and_throughput(client, models["cnn"], scratch)]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
