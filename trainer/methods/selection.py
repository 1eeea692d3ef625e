"""Deep embedded validation (DEV; You et al., ICML 2019): the target risk of a trained network
estimated without target labels, so that a user can choose between adapt methods, or their
hyperparameters, on the same pair of domains without labelling the target.

The source validation split's per-example losses are weighted by how target-like each example
looks, the density ratio p(target | x) / p(source | x) (scaled by the sample sizes) given by a
logistic-regression domain classifier (scikit-learn) trained on the features of source and
target training samples; a control variate (the weights' own mean, known to be 1) lowers the
variance of the weighted mean. Lower is better; the figure compares jobs of one pair of
domains, not pairs. Features are taken as in `trainer.methods.shift`: each domain's batches
normalised with their own statistics, nothing changed.
"""

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from trainer.architectures import Network
from trainer.methods.shift import domain_features


def dev_risk(
    model: Network,
    source_sample: torch.Tensor,
    validation: tuple[torch.Tensor, torch.Tensor],
    target_sample: torch.Tensor,
    batch_size: int,
    device: torch.device,
) -> float:
    """DEV's risk of `model`: source and target training samples train the domain classifier,
    the source validation split (inputs, labels) is weighted by it."""
    source = domain_features(model, source_sample, batch_size, device).cpu().numpy()
    target = domain_features(model, target_sample, batch_size, device).cpu().numpy()
    validation_x, validation_y = validation
    features = domain_features(model, validation_x, batch_size, device)
    with torch.no_grad():
        logits = model.head(features).float()
    losses = F.cross_entropy(logits, validation_y.to(logits.device), reduction="none")
    scaler = StandardScaler().fit(np.concatenate([source, target]))
    domain = LogisticRegression(max_iter=1000).fit(
        scaler.transform(np.concatenate([source, target])),
        np.r_[np.zeros(len(source)), np.ones(len(target))],
    )
    p_target = domain.predict_proba(scaler.transform(features.cpu().numpy()))[:, 1]
    weights = len(source) / len(target) * p_target / np.clip(1 - p_target, 1e-6, None)
    weighted = weights * losses.cpu().numpy()
    covariance = np.cov(np.stack([weighted, weights]))
    eta = -covariance[0, 1] / max(covariance[1, 1], 1e-12)
    return float(weighted.mean() + eta * weights.mean() - eta)
