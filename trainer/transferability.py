"""Transferability before training: how well a model's features suit a labelled dataset, from
one forward pass and no training, so that candidate bases can be ranked before any is tuned.

The score is LogME (You, Liu, Wang and Long, "LogME: Practical Assessment of Pre-trained Models
for Transfer Learning", ICML 2021): for each class, the log of the maximum evidence (marginal
likelihood) of a Bayesian linear regression from the features to that class's one-hot target,
per example; averaged over the classes. Higher is better. It compares models on the same
examples; its value on different examples, or different datasets, means little.

A port of the authors' reference code (github.com/thuml/LogME, `LogME.py`, `_fit_fixed_point`:
the fixed-point updates of alpha and beta over the SVD of the features, from You et al.,
"Ranking and Tuning Pre-trained Models", JMLR 2022), in numpy, all classes at once, with three
differences, each making the number the evidence it claims to be:

- log|A| counts all D eigenvalues of A = alpha I + beta F^T F, those of F's null space (alpha)
  included. The reference counts only F's nonzero singular values, which overstates the
  evidence when the rank is below D: fewer examples than features (thuml/LogME issue #23), or
  features with dead (always zero) or duplicated units, which ReLU networks have.
- It iterates until the ratio alpha/beta settles (relative change <= 1e-3, as the reference
  tests), up to 100 steps instead of 11, and evaluates the evidence at the final alpha and beta.
- Only the classes present among the labels are averaged (the reference also scores an empty
  class, whose all-zero target any features fit).
"""

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from trainer.data import LabelledDataset, Split, select
from trainer.spec import MAX_SCORED_EXAMPLES, DatasetSelection
from trainer.trunk import Trunk

METRIC = "logme"
BATCH_SIZE = 256
MAX_STEPS = 100
TOLERANCE = 1e-3  # relative change of alpha/beta at which the fixed point is reached
EPSILON = 1e-5  # the reference's guard against dividing by a zero fit or norm


def _fit_terms(
    sigma: np.ndarray, x2: np.ndarray, outside: np.ndarray, t: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """gamma (the effective number of parameters), |m|^2 and |y - F m|^2 of the posterior
    mean m at the ratio t = alpha / beta, per class. `sigma` (k, 1) are the squared singular
    values, `x2` (k, C) the squared projections of the targets on the left singular vectors,
    `outside` (C,) the squared norm of the targets outside F's column space."""
    gamma = (sigma / (sigma + t)).sum(axis=0)
    m2 = (sigma * x2 / (sigma + t) ** 2).sum(axis=0)
    res2 = (x2 * (t / (sigma + t)) ** 2).sum(axis=0) + outside
    return gamma, m2, res2


def logme(features: np.ndarray, labels: np.ndarray) -> float:
    """The LogME score of `features` (N, D) for class `labels` (N,): the mean over the classes
    of the maximum log evidence per example. ValueError for features that are not finite, or
    labels of fewer than two classes."""
    f = np.asarray(features, dtype=np.float64)
    labels = np.asarray(labels)
    if f.ndim != 2 or labels.shape != (len(f),):
        raise ValueError(f"features {f.shape} and labels {labels.shape} do not pair up")
    if not np.isfinite(f).all():
        raise ValueError("the features hold NaN or infinite values")
    classes = np.unique(labels)
    if len(classes) < 2:
        raise ValueError("a score needs examples of at least two classes")
    n, d = f.shape
    targets = (labels[:, None] == classes[None, :]).astype(np.float64)  # (N, C), one-hot
    u, s, _vh = np.linalg.svd(f, full_matrices=False)
    # The numerical rank, as numpy.linalg.matrix_rank draws it.
    kept = s > s.max(initial=0.0) * max(n, d) * np.finfo(np.float64).eps
    u, sigma = u[:, kept], s[kept, None] ** 2
    x2 = (u.T @ targets) ** 2
    outside = np.clip((targets**2).sum(axis=0) - x2.sum(axis=0), 0.0, None)

    alpha, beta = np.ones(len(classes)), np.ones(len(classes))
    moving = np.ones(len(classes), dtype=bool)
    for _ in range(MAX_STEPS):
        t = alpha / beta
        gamma, m2, res2 = _fit_terms(sigma, x2, outside, t)
        new_alpha, new_beta = gamma / (m2 + EPSILON), (n - gamma) / (res2 + EPSILON)
        alpha, beta = np.where(moving, new_alpha, alpha), np.where(moving, new_beta, beta)
        moving &= np.abs(new_alpha / new_beta - t) / t > TOLERANCE
        if not moving.any():
            break

    _gamma, m2, res2 = _fit_terms(sigma, x2, outside, alpha / beta)
    log_det = np.log(alpha + beta * sigma).sum(axis=0) + (d - kept.sum()) * np.log(alpha)
    evidence = (
        d / 2 * np.log(alpha)
        + n / 2 * np.log(beta)
        - log_det / 2
        - beta / 2 * res2
        - alpha / 2 * m2
        - n / 2 * np.log(2 * np.pi)
    )
    return float((evidence / n).mean())


def scoring_split(dataset: LabelledDataset, fraction: float | None, seed: int) -> Split:
    """The examples a score reads: the training split, or the stratified `fraction` of it that
    a job of `seed` trains on (the job spec's own selection); past `MAX_SCORED_EXAMPLES`, a
    stratified subsample of that."""
    ref = DatasetSelection(dataset=dataset.name, fraction=fraction)
    chosen = select(dataset.splits["train"], ref, seed)
    if len(chosen) > MAX_SCORED_EXAMPLES:
        cap = DatasetSelection(dataset=dataset.name, fraction=MAX_SCORED_EXAMPLES / len(chosen))
        chosen = select(chosen, cap, seed)
    return chosen


def features(trunk: Trunk, split: Split) -> np.ndarray:
    """The trunk's features of every example, (N, feature_dim): what its backbone hands a task
    head, in evaluation mode (BatchNorm's running statistics, no dropout)."""
    network = nn.Sequential(trunk.normalize, trunk.backbone).eval()
    with torch.inference_mode():
        batches = [network(batch) for batch in trunk.inputs(split).split(BATCH_SIZE)]
    return torch.cat(batches).double().numpy()


@dataclass(frozen=True)
class Score:
    score: float
    feature_dim: int


def score(trunk: Trunk, split: Split) -> Score:
    """LogME of the trunk's features for the split's labels."""
    extracted = features(trunk, split)
    return Score(logme(extracted, split.y.numpy()), extracted.shape[1])
