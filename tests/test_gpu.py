"""The GPU path on a CUDA machine (skipped elsewhere; the CPU tests cover the same code):
bf16 autocast, channels-last images, `torch.compile` and pinned, non-blocking copies train
what fp32 trains on the CPU. On a GPU host: `.venv/bin/pytest tests/test_gpu.py`."""

import pytest
import torch

from tests.test_core import spec_of, train
from trainer.training import to_device

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

BBC_CAUSAL_LM = {
    "kind": "pretrain",
    "model": {"architecture": "transformer",
              "params": {"d_model": 64, "layers": 2, "heads": 4, "max_length": 64}},
    "method": {"name": "causal_lm"},
    "data": {"train": "builtin:bbc-news"},
}  # fmt: skip


def test_a_batch_reaches_the_gpu_through_pinned_memory_in_channels_last_order():
    images, labels = torch.randn(4, 1, 8, 8), torch.arange(4)
    on_gpu = to_device((images, labels), torch.device("cuda"), channels_last=True)
    torch.cuda.synchronize()
    assert all(t.is_cuda for t in on_gpu)
    assert on_gpu[0].is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(on_gpu[0].cpu(), images) and torch.equal(on_gpu[1].cpu(), labels)


def test_the_cnn_in_bf16_and_channels_last_learns_what_fp32_learns_on_the_cpu():
    hyperparameters = {"epochs": 5, "seed": 0}
    on_cpu, _ = train(spec_of(hyperparameters=hyperparameters))
    fast = {**hyperparameters, "channels_last": True}  # mixed_precision `auto`: bf16 on CUDA
    on_gpu, _ = train(spec_of(hyperparameters=fast), "cuda")
    # Autocast computes in bf16 and keeps the weights in fp32: the model saves as trained.
    assert all(p.dtype == torch.float32 for p in on_gpu.model.parameters())
    cpu, gpu = on_cpu.card.metrics, on_gpu.card.metrics
    assert gpu["test_accuracy"] >= 0.93
    assert abs(gpu["test_accuracy"] - cpu["test_accuracy"]) <= 0.03


def test_the_transformer_compiled_pretrains_in_bf16():
    hyperparameters = {"epochs": 2, "batch_size": 32, "seed": 0, "compile": True}
    result, _ = train(spec_of(**BBC_CAUSAL_LM, hyperparameters=hyperparameters), "cuda")
    metrics = result.card.metrics
    # Perplexity from a uniform guess over the vocabulary to well below it.
    assert metrics["val_perplexity"] < 0.5 * metrics["initial_val_perplexity"]


def test_sft_with_lora_in_bf16_with_gradient_checkpointing_learns_what_fp32_learns_on_the_cpu(
    tmp_path, monkeypatch
):
    from tests.test_sft import lookup_lines, write_jsonl
    from tests.tiny_lm import configure, save_tiny_causal_lm
    from trainer.data import register_file

    configure(monkeypatch, {"llama": save_tiny_causal_lm(tmp_path / "llama", "llama")})
    lines = [line for split in ("train", "validation", "test") for line in lookup_lines(split)]
    register_file("ds_gpu_lookup", write_jsonl(tmp_path / "l.jsonl", lines), "jsonl", False, "")
    params = {"base": "llama", "max_length": 64, "gradient_checkpointing": True}
    job = {
        "kind": "finetune",
        "model": {"architecture": "hf_causal_lm", "params": params},
        "method": {"name": "sft", "params": {"lora_rank": 16, "lora_alpha": 16}},
        "data": {"train": "ds_gpu_lookup"},
        "hyperparameters": {"epochs": 120, "batch_size": 4, "learning_rate": 5e-3, "seed": 0},
    }
    on_cpu, _ = train(spec_of(**job))
    on_gpu, _ = train(spec_of(**job), "cuda")  # mixed_precision `auto`: bf16 on CUDA
    cpu, gpu = on_cpu.card.metrics, on_gpu.card.metrics
    assert all(p.dtype == torch.float32 for p in on_gpu.model.parameters())
    assert gpu["validation_token_accuracy"] >= cpu["validation_token_accuracy"] - 0.05
    assert gpu["trained_parameters"] < gpu["parameters"] / 2
