"""Minimum Class Confusion (Jin et al., 2020): on the target batch, the classifier should not
spread its predictions over several classes at once. The loss is the off-diagonal mass of the
classes' correlation matrix over the batch, from temperature-softened predictions, each image
weighted by how certain it is (low entropy counts more), rows normalised so that frequent
classes do not dominate."""

import torch
from pydantic import Field

from trainer.architectures import Network
from trainer.methods.adaptation import AdaptParams, Step, adapt
from trainer.methods.shift import entropy
from trainer.run import RunContext, TrainResult


class Params(AdaptParams):
    temperature: float = Field(2.5, gt=0, le=100, description="Softens the predictions.")


def class_confusion(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    probabilities = (logits / temperature).softmax(1)
    certainty = 1 + torch.exp(-entropy(probabilities))
    weights = (len(logits) * certainty / certainty.sum()).detach()
    correlation = (probabilities * weights[:, None]).T @ probabilities
    correlation = correlation / correlation.sum(1, keepdim=True)
    classes = logits.shape[1]
    return (correlation.sum() - correlation.trace()) / classes


def run(ctx: RunContext, params: Params) -> TrainResult:

    def make_domain_loss(model: Network, _generator: torch.Generator):

        def loss(step: Step) -> torch.Tensor:
            return class_confusion(model.head(step.target_features).float(), params.temperature)

        return loss, None

    return adapt(ctx, params.weight, make_domain_loss, adabn=params.adabn)
