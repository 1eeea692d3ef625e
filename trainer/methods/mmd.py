"""Multi-kernel MMD (as in DAN, Long et al., 2015): shrink the maximum mean discrepancy
between source and target features under a family of Gaussian kernels. Its weight ramps up
over training (`adaptation.ramp`) so that the classifier learns before features align."""

import torch
from pydantic import Field

from trainer.methods.adaptation import AdaptParams, Step, adapt, ramp
from trainer.run import RunContext, TrainResult


class Params(AdaptParams):
    kernels: int = Field(5, ge=1, le=16, description="Bandwidths: base * 2^k, centred.")


def mmd_loss(source: torch.Tensor, target: torch.Tensor, kernels: int = 5) -> torch.Tensor:
    """Biased MK-MMD^2 estimate with equally weighted kernels (so it lies in [0, 2]); the base
    bandwidth is the mean pairwise squared distance."""
    features = torch.cat([source, target])
    distances = torch.cdist(features, features).pow(2)
    base = distances.detach().mean().clamp_min(1e-6)
    multipliers = [2.0 ** (k - kernels // 2) for k in range(kernels)]
    kernel = sum(torch.exp(-distances / (base * m)) for m in multipliers) / kernels
    n = len(source)
    return kernel[:n, :n].mean() + kernel[n:, n:].mean() - 2 * kernel[:n, n:].mean()


def run(ctx: RunContext, params: Params) -> TrainResult:

    def loss(step: Step) -> torch.Tensor:
        discrepancy = mmd_loss(step.source_features, step.target_features, params.kernels)
        return ramp(step.progress) * discrepancy

    return adapt(ctx, params.weight, lambda _model, _generator: (loss, None), adabn=params.adabn)
