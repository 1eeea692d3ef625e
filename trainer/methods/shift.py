"""How far apart the domains are, and how the network sees the target: figures an adapt job
reports before training and after every epoch, so that a user sees whether alignment happened
(and whether the target's predictions are collapsing onto a few classes) without target labels.

- `feature_mmd`: MK-MMD² between source and target features (the discrepancy DAN minimises);
- `confidence`: the mean top-class probability on the target;
- `class_balance`: the entropy of the mean target prediction over log(classes): 1 when every
  class is predicted as often, 0 when one class takes everything.

Each is taken on a fixed random sample of each training split (`fixed_sample`: the same images
every epoch, whatever order a file gave them in). BatchNorm normalises each domain's batches
with their own statistics, as in training, and its running statistics are left alone: the
figures observe, they change nothing.
"""

import math

import torch

from trainer.architectures import Network
from trainer.batchnorm import batchnorms, even_batches, running_statistics_kept

SAMPLE = 512  # images of each domain: a few batches' worth, cheap beside an epoch


def entropy(probabilities: torch.Tensor) -> torch.Tensor:
    """The entropy of each distribution along the last dimension, in nats."""
    return -(probabilities * probabilities.clamp_min(1e-12).log()).sum(-1)


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


def fixed_sample(x: torch.Tensor) -> torch.Tensor:
    """At most SAMPLE of `x`, drawn by a generator of its own: the run's draws nothing."""
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    return x[order[:SAMPLE]]


@torch.no_grad()
def diagnose(
    model: Network,
    source: torch.Tensor,
    target: torch.Tensor,
    batch_size: int,
    device: torch.device,
) -> dict[str, float]:
    """The figures above, for `source` and `target` inputs (`fixed_sample`s of training splits)."""
    source_features = domain_features(model, source, batch_size, device)
    target_features = domain_features(model, target, batch_size, device)
    probabilities = model.head(target_features).float().softmax(1)
    return {
        "feature_mmd": mmd_loss(source_features, target_features).item(),
        "confidence": probabilities.max(1).values.mean().item(),
        "class_balance": entropy(probabilities.mean(0)).item() / math.log(probabilities.shape[1]),
    }


@torch.no_grad()
def domain_features(
    model: Network, x: torch.Tensor, batch_size: int, device: torch.device
) -> torch.Tensor:
    """The features of `x`, all of one domain, its batches normalised with their own
    statistics as in training; the running statistics left as they are."""
    was_training = model.training
    model.eval()
    for norm in batchnorms(model):
        norm.train()
    try:
        with running_statistics_kept(model):
            parts = [model.features(part.to(device)) for part in even_batches(x, batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(parts).float()
