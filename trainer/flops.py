"""Model FLOPs of the registry's `transformer` and the peak FLOP/s of common GPUs, for model
FLOPs utilisation (MFU): achieved model FLOP/s over the hardware's peak.

The count is the standard one of the PaLM paper (Chowdhery et al. 2022, "PaLM: Scaling Language
Modeling with Pathways", appendix B) and of nanoGPT's `GPT.estimate_mfu`
(github.com/karpathy/nanoGPT, model.py): training one token costs

    6·N + 12·L·H·Q·T  FLOPs

with N the non-embedding parameters, L layers, H heads, Q the head dimension and T the sequence
length. 6·N is every weight's multiply-add (2 FLOPs) in the forward pass and twice that in the
backward pass (the gradients of the input and of the weight); 12·L·H·Q·T is the attention's
scores and weighted sum (4·H·Q·T per layer and token forward, twice that backward), over the
whole T x T matrix: the causal mask's skipped half is counted, as in both sources. Softmax,
layer norms, activations, the loss and the optimiser are not counted.

N counts every parameter that multiplies activations: the blocks, the final layer norm and
the output head (a `causal_lm` head is a separate `Linear(d_model, vocab)`, not tied to the
token embedding, so its d_model·vocab weights count). The token and position embeddings are
lookups, not matmuls, and do not count. Biases and layer-norm weights are counted as if they
were matmul weights, as in the sources: an overcount of about 1/d_model.
"""

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from trainer.architectures.transformer import TransformerParams


@dataclass(frozen=True)
class TransformerFlops:
    parameters: int  # N: non-embedding parameters, the output head included
    layers: int
    heads: int
    head_dim: int
    sequence_length: int

    @property
    def attention_per_token(self) -> int:
        """Forward FLOPs of the attention scores and weighted sum, per token: 4·L·H·Q·T."""
        return 4 * self.layers * self.heads * self.head_dim * self.sequence_length

    @property
    def forward_per_token(self) -> int:
        """2·N + 4·L·H·Q·T: a forward pass (evaluation)."""
        return 2 * self.parameters + self.attention_per_token

    @property
    def training_per_token(self) -> int:
        """6·N + 12·L·H·Q·T: a forward and a backward pass (training)."""
        return 3 * self.forward_per_token


def transformer_flops(
    params: TransformerParams | Mapping[str, Any],
    vocab_size: int,
    sequence_length: int | None = None,
    head_outputs: int | None = None,
) -> TransformerFlops:
    """The FLOPs of the registry's `transformer` with a linear head of `head_outputs` outputs
    (default `vocab_size`: the `causal_lm` head), over sequences of `sequence_length` tokens
    (default `max_length`, what `causal_lm` trains on). `vocab_size` is the tokenizer's, which
    may be smaller than `params.vocab_size` asked for."""
    p = params if isinstance(params, TransformerParams) else TransformerParams(**params)
    d = p.d_model
    outputs = vocab_size if head_outputs is None else head_outputs
    # Per block: qkv (d x 3d) and out (d x d) with biases, the MLP (d x 4d, 4d x d) with biases,
    # two layer norms (2d each).
    block = (3 * d * d + 3 * d) + (d * d + d) + (4 * d * d + 4 * d) + (4 * d * d + d) + 4 * d
    parameters = p.layers * block + 2 * d + (d * outputs + outputs)
    return TransformerFlops(
        parameters=parameters,
        layers=p.layers,
        heads=p.heads,
        head_dim=d // p.heads,
        sequence_length=p.max_length if sequence_length is None else sequence_length,
    )


def non_embedding_parameters(model: nn.Module) -> int:
    """The parameters of `model` outside its `nn.Embedding`s: N counted from a built model."""
    embedded = {
        id(p) for m in model.modules() if isinstance(m, nn.Embedding) for p in m.parameters()
    }
    return sum(p.numel() for p in model.parameters() if id(p) not in embedded)


# Peak dense (without structured sparsity) bf16 tensor-core FLOP/s, by a pattern searched for in
# `torch.cuda.get_device_name()`; the first that matches wins, so specific names come first.
# From NVIDIA's datasheets, which list bf16 "with sparsity" at twice these: A100 Tensor Core GPU
# datasheet (312 TFLOPS, SXM and PCIe); H100 Tensor Core GPU datasheet (SXM 989, PCIe 756, NVL
# 835); H200 Tensor Core GPU datasheet (SXM 989, NVL 835); L40S datasheet (362); L40 datasheet
# (181); L4 Tensor Core GPU datasheet (121); A10 Tensor Core GPU datasheet (125).
PEAK_BF16_FLOPS: tuple[tuple[str, float], ...] = (
    (r"H100.*PCIe", 756e12),
    (r"H100 NVL", 835e12),
    (r"H100", 989e12),  # SXM5: "NVIDIA H100 80GB HBM3"
    (r"H200 NVL", 835e12),
    (r"H200", 989e12),  # SXM: "NVIDIA H200"; also the GH200's GPU
    (r"A100", 312e12),  # SXM4 and PCIe, 40 and 80 GB
    (r"L40S", 362e12),
    (r"L40\b", 181e12),
    (r"\bL4\b", 121e12),
    (r"\bA10\b", 125e12),  # not the A10G, a cloud variant without a datasheet of its own
)


def peak_bf16_flops(device_name: str) -> float | None:
    """The datasheet's peak dense bf16 FLOP/s of a GPU by its `torch.cuda.get_device_name()`;
    None when the GPU is not in the table."""
    for pattern, flops in PEAK_BF16_FLOPS:
        if re.search(pattern, device_name, re.IGNORECASE):
            return flops
    return None
