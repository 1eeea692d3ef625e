"""Multi-kernel MMD (as in DAN, Long et al., 2015): shrink the maximum mean discrepancy
between source and target features under a family of Gaussian kernels. Its weight ramps up
over training (`adaptation.ramp`) so that the classifier learns before features align."""

import torch
from pydantic import Field

from trainer.methods.adaptation import AdaptParams, Step, adapt, ramp
from trainer.methods.shift import mmd_loss
from trainer.run import RunContext, TrainResult


class Params(AdaptParams):
    kernels: int = Field(5, ge=1, le=16, description="Bandwidths: base * 2^k, centred.")


def run(ctx: RunContext, params: Params) -> TrainResult:

    def loss(step: Step) -> torch.Tensor:
        discrepancy = mmd_loss(step.source_features, step.target_features, params.kernels)
        return ramp(step.progress) * discrepancy

    return adapt(ctx, params.weight, lambda _model, _generator: (loss, None), adabn=params.adabn)
