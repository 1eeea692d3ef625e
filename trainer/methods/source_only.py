"""The adaptation baseline: train on the labelled source alone, test on the target."""

from pydantic import BaseModel, ConfigDict

from trainer.methods.adaptation import adapt
from trainer.run import RunContext, TrainResult


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


def run(ctx: RunContext, _params: Params) -> TrainResult:
    return adapt(ctx, 0.0, None)
