"""The registry of model architectures. Adding one is a new module plus one line here.

An architecture declares its own constraints in its line, and `trainer.validation` asks for them:
`single_process` (why it cannot train on several processes), `single_process_with` (params that,
when true, make it so), `reads_left_to_right` and `supports_lora` (what methods may need of it).

Every model is a `Network`: input normalisation, a backbone that makes features, and a task
head. A backbone has `feature_dim` and `blocks()` (its stages from input to output, for partial
freezing); sequence backbones also have `forward_sequence` (one feature vector per token).
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from pydantic import BaseModel
from torch import nn

from trainer.architectures import cnn, hf_causal_lm, hf_encoder, mlp, resnet, rnn, transformer
from trainer.architectures.log_mel import LogMel, spectrogram_shape
from trainer.card import LogMelSettings


class BackboneBuilder(Protocol):
    def __call__(
        self, params: Any, input_shape: Sequence[int], vocab_size: int | None
    ) -> nn.Module: ...


@dataclass(frozen=True)
class Architecture:
    name: str
    params: type[BaseModel]
    build_backbone: BackboneBuilder
    modalities: frozenset[str]  # the kinds of data it reads: image, tabular, text, series
    # Architectures that start from weights trained elsewhere: params -> (trunk card without
    # `architecture`, backbone weights). The others start from random weights.
    pretrained: Callable[[Any], tuple[dict[str, Any], dict[str, torch.Tensor]]] | None = None
    # Its trunk card as training will start it, read without the weights (params -> card
    # without `architecture`), for the checks at submission that need its tokenizer.
    pretrained_card: Callable[[Any], dict[str, Any]] | None = None
    # Why `resources.processes` must stay 1 for it (see trainer.validation); None: it need not.
    single_process: str | None = None
    # Params that, when true, keep it to 1 process: param name -> why.
    single_process_with: dict[str, str] = field(default_factory=dict)
    reads_left_to_right: bool = True  # no token sees the ones after it (causal LM can train it)
    supports_lora: bool = False  # LoRA adapters can be attached to it


BATCH_NORM_ON_SHARES = (
    "BatchNorm would normalise each share by its own statistics (SyncBatchNorm runs on GPUs only)"
)


# Audio is read as its log-mel spectrogram, a one-channel image (`build_trunk`).
IMAGES_AUDIO, TABLES, TEXT = (
    frozenset({"image", "audio"}),
    frozenset({"image", "tabular"}),
    frozenset({"text"}),
)
SERIES = frozenset({"series"})  # forecasting's windows (time, channels)

ARCHITECTURES: dict[str, Architecture] = {
    arch.name: arch
    for arch in (
        Architecture(
            "cnn",
            cnn.CNNParams,
            cnn.build_backbone,
            IMAGES_AUDIO,
            single_process_with={"batch_norm": BATCH_NORM_ON_SHARES},
        ),
        Architecture(
            "resnet",
            resnet.ResNetParams,
            resnet.build_backbone,
            IMAGES_AUDIO,
            single_process=BATCH_NORM_ON_SHARES,
        ),
        Architecture("mlp", mlp.MLPParams, mlp.build_backbone, TABLES | SERIES),
        Architecture("gru", rnn.RNNParams, rnn.build_gru, TEXT | SERIES),
        Architecture("lstm", rnn.RNNParams, rnn.build_lstm, TEXT | SERIES),
        Architecture(
            "transformer", transformer.TransformerParams, transformer.build_backbone, TEXT | SERIES
        ),
        Architecture(
            "hf_encoder",
            hf_encoder.HFEncoderParams,
            hf_encoder.build_backbone,
            TEXT,
            hf_encoder.pretrained,
            reads_left_to_right=False,
            supports_lora=True,
        ),
        Architecture(
            "hf_causal_lm",
            hf_causal_lm.HFCausalLMParams,
            hf_causal_lm.build_backbone,
            TEXT,
            hf_causal_lm.pretrained,
            pretrained_card=hf_causal_lm.trunk_card,
            supports_lora=True,
        ),
    )
}


def channel_dim(input_rank: int) -> int:
    """The dimension of a batch that holds an example's channels: a series window's
    (time, channels) last, as sequence models read it; an image's (C, H, W) first; a table's
    features, its only one."""
    return 2 if input_rank == 2 else 1


class Normalize(nn.Module):
    """Per-channel (images, audio's log-mel spectrograms, series) or per-feature (tables)
    standardisation inside the model, so that the model takes raw inputs."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], input_rank: int) -> None:
        super().__init__()
        shape = [1] * (input_rank + 1)
        shape[channel_dim(input_rank)] = len(mean)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(shape))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def normalization_of(x: torch.Tensor) -> dict[str, list[float]]:
    """Mean and std per channel (`channel_dim`) of a batch of raw inputs."""
    dims = [d for d in range(x.dim()) if d != channel_dim(x.dim() - 1)]
    return {"mean": x.mean(dim=dims).tolist(), "std": x.std(dim=dims).clamp_min(1e-6).tolist()}


class ChangesFromLastRow(nn.Module):
    """A context (N, L, columns) with its first `series` columns as their changes from the
    context's last row: a forecaster's trunk reads a window's shape, not its level, so that a
    series which trends past its training range looks to it as it did in training."""

    def __init__(self, series: int) -> None:
        super().__init__()
        self.series = series

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        series = x[..., : self.series]
        return torch.cat([series - series[:, -1:], x[..., self.series :]], dim=-1)


class Network(nn.Module):
    """Normalisation, backbone and head. A `per_token` network's features are the backbone's
    sequence, a vector per token (`forward_sequence`), for a head that tags each token. A head
    with a `baseline` (a forecaster's: its context's last values) outputs the change from that
    baseline of the input, and the network adds it back."""

    def __init__(
        self, normalize: nn.Module, backbone: nn.Module, head: nn.Module, per_token: bool = False
    ) -> None:
        super().__init__()
        self.normalize = normalize
        self.backbone = backbone
        self.head = head
        self.per_token = per_token

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if self.per_token:
            return self.backbone.forward_sequence(self.normalize(x))
        return self.backbone(self.normalize(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.outputs_and_features(x)[0]

    def outputs_and_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The outputs and the features they come from (predict answers both)."""
        features = self.features(x)
        outputs = self.head(features)
        baseline = getattr(self.head, "baseline", None)
        return (outputs if baseline is None else outputs + baseline(x)), features

    def head_targets(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """What the head itself must output for the targets `y` of inputs `x`: `y`, less the
        head's baseline if it has one."""
        baseline = getattr(self.head, "baseline", None)
        return y if baseline is None else y - baseline(x)


def build_trunk(
    architecture: str,
    params: dict[str, Any],
    input_shape: Sequence[int],
    normalization: dict[str, list[float]] | None,
    vocab_size: int | None = None,
    log_mel: LogMelSettings | None = None,
    changes_from_last_row: int | None = None,
) -> tuple[nn.Module, nn.Module]:
    """The input stage (`Network.normalize`) and the backbone of a network. With `log_mel`
    (audio), the input stage is the log-mel front end, then the standardisation of its
    spectrograms, and the backbone reads spectrograms: the model takes waveforms of
    `input_shape` ([samples]). With `changes_from_last_row` (forecasting), a context's first
    that many columns are read as their changes from its last row (`ChangesFromLastRow`),
    then standardised."""
    shape = input_shape if log_mel is None else spectrogram_shape(log_mel, input_shape)
    arch = ARCHITECTURES[architecture]
    backbone = arch.build_backbone(arch.params.model_validate(params), shape, vocab_size)
    stages: list[nn.Module] = [] if log_mel is None else [LogMel(log_mel)]
    if changes_from_last_row:
        stages.append(ChangesFromLastRow(changes_from_last_row))
    if normalization is not None:
        stages.append(Normalize(normalization["mean"], normalization["std"], len(shape)))
    if len(stages) <= 1:
        return (stages[0] if stages else nn.Identity()), backbone
    return nn.Sequential(*stages), backbone
