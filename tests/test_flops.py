"""The analytic FLOPs of trainer.flops against an independent count: torch's
`FlopCounterMode` over a forward and backward pass of the registry's transformer with a
`causal_lm` head."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from trainer.architectures import build_trunk
from trainer.flops import non_embedding_parameters, peak_bf16_flops, transformer_flops

# The formula counts biases and layer-norm weights as matmul weights (about 1/d_model too
# many), FlopCounterMode only matrix products: with d_model 64 they differ by 1.6%.
TOLERANCE = 0.03
PARAMS = {"d_model": 64, "layers": 2, "heads": 4, "max_length": 32, "vocab_size": 500}
VOCAB = 400  # the tokenizer's, smaller than asked for


def causal_lm_model(params: dict, vocab: int) -> tuple[nn.Module, nn.Module]:
    _, backbone = build_trunk("transformer", params, [params["max_length"]], None, vocab)
    return backbone, nn.Linear(backbone.feature_dim, vocab)


def counted_training_flops(params: dict, vocab: int, batch: int) -> int:
    """FLOPs FlopCounterMode counts for one training step, as causal_lm takes it."""
    torch.manual_seed(0)
    backbone, head = causal_lm_model(params, vocab)
    x = torch.randint(1, vocab, (batch, params["max_length"] + 1))
    with FlopCounterMode(display=False) as counter:
        logits = head(backbone.forward_sequence(x[:, :-1]))
        F.cross_entropy(logits.flatten(0, 1), x[:, 1:].flatten()).backward()
    return counter.get_total_flops()


def test_parameters_match_the_built_model():
    backbone, head = causal_lm_model(PARAMS, VOCAB)
    flops = transformer_flops(PARAMS, VOCAB)
    assert flops.parameters == non_embedding_parameters(nn.ModuleList([backbone, head]))
    assert (flops.layers, flops.heads, flops.head_dim, flops.sequence_length) == (2, 4, 16, 32)


@pytest.mark.parametrize(
    "params",
    [
        PARAMS,
        PARAMS | {"d_model": 96, "layers": 3, "heads": 6, "max_length": 64},
    ],
)
def test_training_flops_match_flop_counter(params):
    batch = 4
    tokens = batch * params["max_length"]
    analytic = transformer_flops(params, VOCAB).training_per_token * tokens
    counted = counted_training_flops(params, VOCAB, batch)
    assert counted == pytest.approx(analytic, rel=TOLERANCE)
    assert analytic >= counted  # the formula's extra terms only add


def test_attention_term_matches_flop_counter():
    """12·L·H·Q·T alone: the difference the sequence length makes at a fixed N."""
    short, long = PARAMS | {"max_length": 16}, PARAMS | {"max_length": 64}
    batch = 8
    counted = {
        p["max_length"]: counted_training_flops(p, VOCAB, batch) / (batch * p["max_length"])
        for p in (short, long)
    }
    analytic = {
        p["max_length"]: transformer_flops(p, VOCAB).training_per_token for p in (short, long)
    }
    assert counted[64] - counted[16] == pytest.approx(analytic[64] - analytic[16], rel=1e-6)


def test_forward_is_a_third_of_training():
    flops = transformer_flops(PARAMS, VOCAB)
    assert flops.training_per_token == 3 * flops.forward_per_token
    d, n = 64, flops.parameters
    assert flops.training_per_token == 6 * n + 12 * 2 * 4 * (d // 4) * 32


@pytest.mark.parametrize(
    ("name", "peak"),
    [
        ("NVIDIA A100-SXM4-80GB", 312e12),
        ("NVIDIA A100-PCIE-40GB", 312e12),
        ("NVIDIA H100 80GB HBM3", 989e12),
        ("NVIDIA H100 PCIe", 756e12),
        ("NVIDIA H200", 989e12),
        ("NVIDIA L4", 121e12),
        ("NVIDIA L40S", 362e12),
        ("NVIDIA A10", 125e12),
        ("NVIDIA A10G", None),
        ("Tesla T4", None),
        ("NVIDIA GeForce RTX 4090", None),
        ("", None),
    ],
)
def test_peak_by_device_name(name, peak):
    assert peak_bf16_flops(name) == peak
