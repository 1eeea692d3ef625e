"""The adaptation baseline: train on the labelled source alone, test on the target."""

from trainer.methods.adaptation import BaselineParams, adapt
from trainer.run import RunContext, TrainResult

Params = BaselineParams


def run(ctx: RunContext, params: Params) -> TrainResult:
    return adapt(ctx, 0.0, None, adabn=params.adabn)
