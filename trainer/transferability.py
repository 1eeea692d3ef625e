"""Transferability before training: how well a model's features suit a labelled dataset, from
one forward pass and no training, so that candidate bases can be ranked before any is tuned.

The score is LogME (You, Liu, Wang and Long, "LogME: Practical Assessment of Pre-trained Models
for Transfer Learning", ICML 2021): for each target, the log of the maximum evidence (marginal
likelihood) of a Bayesian linear regression from the features to it, per example; averaged over
the targets. A classifier's targets are its classes' one-hot indicators, a multilabel model's
its labels' indicators, a regressor's its standardised targets and a forecaster's its
standardised forecast values (the paper scores regression the same way). Higher is better. It
compares models on the same examples; its value on different examples, or different datasets,
means little. Token tagging has no score: its features are per token, its examples sentences.

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
- Only the targets that vary among the examples are averaged (the reference also scores an
  empty class, whose all-zero target any features fit).
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
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels {labels.shape} are not one class per example")
    classes = np.unique(labels)
    if len(classes) < 2:
        raise ValueError("a score needs examples of at least two classes")
    return logme_of_targets(features, (labels[:, None] == classes[None, :]).astype(np.float64))


def target_columns(y: np.ndarray, task: str) -> np.ndarray:
    """What LogME fits for a task's labels `y`: (N, T) target columns (see the module's
    docstring); ValueError for a task it does not score."""
    if task == "multilabel":
        return np.asarray(y, dtype=np.float64)
    if task in ("regression", "forecasting"):
        flat = np.asarray(y, dtype=np.float64).reshape(len(y), -1)
        spread = flat.std(axis=0)
        return (flat - flat.mean(axis=0)) / np.where(spread > 0, spread, 1.0)
    raise ValueError(f"no transferability score for {task} data")


def logme_of_targets(features: np.ndarray, targets: np.ndarray) -> float:
    """The LogME score of `features` (N, D) for `targets` (N, T): the mean over the targets
    that vary of the maximum log evidence per example. ValueError for features or targets
    that are not finite, or targets none of which varies."""
    f, targets = np.asarray(features, dtype=np.float64), np.asarray(targets, dtype=np.float64)
    if f.ndim != 2 or targets.ndim != 2 or len(targets) != len(f):
        raise ValueError(f"features {f.shape} and targets {targets.shape} do not pair up")
    if not np.isfinite(f).all():
        raise ValueError("the features hold NaN or infinite values")
    if not np.isfinite(targets).all():
        raise ValueError("the targets hold NaN or infinite values")
    targets = targets[:, targets.std(axis=0) > 0]
    if targets.shape[1] == 0:
        raise ValueError("no target varies among the examples scored")
    n, d = f.shape
    u, s, _vh = np.linalg.svd(f, full_matrices=False)
    # The numerical rank, as numpy.linalg.matrix_rank draws it.
    kept = s > s.max(initial=0.0) * max(n, d) * np.finfo(np.float64).eps
    u, sigma = u[:, kept], s[kept, None] ** 2
    x2 = (u.T @ targets) ** 2
    outside = np.clip((targets**2).sum(axis=0) - x2.sum(axis=0), 0.0, None)

    alpha, beta = np.ones(targets.shape[1]), np.ones(targets.shape[1])
    moving = np.ones(targets.shape[1], dtype=bool)
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


def score(trunk: Trunk, split: Split, task: str) -> Score:
    """LogME of the trunk's features for the split's labels, as `task` reads them."""
    extracted = features(trunk, split)
    if task == "classification":
        return Score(logme(extracted, split.y.numpy()), extracted.shape[1])
    return Score(logme_of_targets(extracted, target_columns(split.y.numpy(), task)),
                 extracted.shape[1])  # fmt: skip
