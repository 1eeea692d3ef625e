"""What a sweep asks for, in Optuna's own vocabulary, and the Optuna objects it names.

A parameter is a dotted path into the job spec (`hyperparameters.learning_rate`,
`model.params.hidden`, `method.params.lora_rank`) and a distribution: `float` or `int` (`low`,
`high`, `log`, `step`) or `categorical` (`choices`). The sampler picks the values of each trial;
the pruner stops trials whose objective falls behind at the same epoch (the resource).
"""

import copy
import math
from typing import Annotated, Any, Literal

import numpy as np
import optuna
from pydantic import Field, field_validator, model_validator

from trainer.spec import JobSpec, Storable, Text, lower_is_better

MAX_TRIALS = 1000
OBJECTIVE_SPLITS = ("validation", "train")
TEST_SPLIT_REFUSED = (
    "the test split is held out: trials are compared on validation (or train), and the best "
    "trial's test metrics are reported beside its objective"
)


class _Strict(Storable):
    model_config = {"extra": "forbid"}


class FloatParameter(_Strict):
    type: Literal["float"]
    low: float
    high: float
    log: bool = False
    step: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _range(self) -> "FloatParameter":
        _check_range(self.low, self.high, self.log, self.step)
        return self

    def distribution(self) -> optuna.distributions.BaseDistribution:
        return optuna.distributions.FloatDistribution(
            self.low, self.high, log=self.log, step=self.step
        )

    def extremes(self) -> list[Any]:
        return [self.low, self.high]

    def grid(self) -> list[Any] | None:
        if self.step is None:
            return None
        count = math.floor((self.high - self.low) / self.step + 1e-9) + 1
        return [self.low + i * self.step for i in range(count)]


class IntParameter(_Strict):
    type: Literal["int"]
    low: int
    high: int
    log: bool = False
    step: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _range(self) -> "IntParameter":
        _check_range(self.low, self.high, self.log, None if self.step == 1 else self.step)
        return self

    def distribution(self) -> optuna.distributions.BaseDistribution:
        return optuna.distributions.IntDistribution(
            self.low, self.high, log=self.log, step=self.step
        )

    def extremes(self) -> list[Any]:
        return [self.low, self.high]

    def grid(self) -> list[Any] | None:
        return list(range(self.low, self.high + 1, self.step))


class CategoricalParameter(_Strict):
    type: Literal["categorical"]
    choices: list[bool | int | float | Text | None] = Field(min_length=1, max_length=1000)

    def distribution(self) -> optuna.distributions.BaseDistribution:
        return optuna.distributions.CategoricalDistribution(self.choices)

    def extremes(self) -> list[Any]:
        return list(self.choices)

    def grid(self) -> list[Any] | None:
        return list(self.choices)


def _check_range(low: float, high: float, log: bool, step: float | None) -> None:
    if low > high:
        raise ValueError(f"low ({low}) is above high ({high})")
    if log and low <= 0:
        raise ValueError("a log scale needs low > 0")
    if log and step is not None:
        raise ValueError("a log scale takes no step (Optuna's rule)")


Parameter = Annotated[
    FloatParameter | IntParameter | CategoricalParameter, Field(discriminator="type")
]


class Objective(_Strict):
    metric: Text = Field(
        "accuracy", min_length=1, max_length=100, description="A metric the method reports."
    )
    split: str = Field("validation", description="`validation` or `train`; never `test`.")
    direction: Literal["maximize", "minimize"] | None = Field(
        None,
        description="By default `minimize` for a loss, perplexity, MAE or RMSE, else `maximize`.",
    )

    @field_validator("split")
    @classmethod
    def _not_test(cls, split: str) -> str:
        if split == "test":
            raise ValueError(TEST_SPLIT_REFUSED)
        if split not in OBJECTIVE_SPLITS:
            raise ValueError(f"must be one of {', '.join(OBJECTIVE_SPLITS)}")
        return split

    @property
    def study_direction(self) -> str:
        if self.direction is not None:
            return self.direction
        return "minimize" if lower_is_better(self.metric) else "maximize"

    @property
    def final_key(self) -> str:
        """Its key in a finished job's metrics (the best epoch's, where early stopping kept it)."""
        return f"{self.split}_{self.metric}"


class Sampler(_Strict):
    name: Literal["tpe", "random", "grid", "qmc", "gp"] = "tpe"
    seed: int = Field(0, ge=0, le=2**31 - 1)


class Pruner(_Strict):
    name: Literal["hyperband", "successive_halving", "median", "none"] = "none"
    min_resource: int = Field(1, ge=1, description="Epochs every trial trains before a rung.")
    reduction_factor: int = Field(3, ge=2, le=100)
    warmup_epochs: int = Field(0, ge=0, description="`median`: epochs before it may prune.")
    startup_trials: int = Field(5, ge=0, description="`median`: trials never pruned.")
    keep_models: bool = Field(
        False,
        description="Keep a pruned trial's model: its training ends where the pruner stopped "
        "it, and its job ends `pruned` with that model and its test figures.",
    )


class SweepSpec(_Strict):
    name: Text | None = Field(None, max_length=200)
    job: JobSpec
    parameters: dict[Annotated[Text, Field(min_length=1, max_length=200)], Parameter] = Field(
        min_length=1,
        max_length=50,
        description="What each trial draws: a dotted path into `job` "
        "(`hyperparameters.learning_rate`, `model.params.hidden`, `method.params.lora_rank`) "
        "and the distribution of its values.",
    )
    objective: Objective = Objective()
    sampler: Sampler = Sampler()
    pruner: Pruner = Pruner()
    max_trials: int = Field(10, ge=1, le=MAX_TRIALS)
    max_parallel_trials: int = Field(1, ge=1, le=100)

    @property
    def epochs(self) -> int:
        """The resource a pruner counts: the job's epochs."""
        return self.job.hyperparameters.epochs

    def job_with(self, params: dict[str, Any]) -> dict[str, Any]:
        """The job spec as JSON with each parameter's value at its path."""
        job = copy.deepcopy(self.job.model_dump(mode="json", exclude_unset=True))
        for path, value in params.items():
            place = job
            *parents, leaf = path.split(".")
            for key in parents:
                place = place.setdefault(key, {})
                if not isinstance(place, dict):
                    raise ValueError(f"{key!r} of {path!r} is not an object in the job spec")
            place[leaf] = value
        return job

    def distributions(self) -> dict[str, optuna.distributions.BaseDistribution]:
        return {path: p.distribution() for path, p in self.parameters.items()}

    def grid(self) -> dict[str, list[Any]] | None:
        """The grid sampler's search space; None when a parameter has no grid (a float with
        no step)."""
        space = {path: p.grid() for path, p in self.parameters.items()}
        return None if any(values is None for values in space.values()) else space

    @property
    def trial_count(self) -> int:
        """How many trials the sweep runs: `max_trials`, or the whole grid if it is smaller."""
        if self.sampler.name == "grid" and (space := self.grid()) is not None:
            return min(self.max_trials, math.prod(len(values) for values in space.values()))
        return self.max_trials

    def make_sampler(self, trials_so_far: int) -> optuna.samplers.BaseSampler:
        """A new sampler for one `ask`. Each process that asks builds its own; seeding it from
        the sweep's seed and the trials so far keeps the sweep reproducible and keeps two asks
        from drawing the same random values. Mixed (SeedSequence), not added: with seed + n,
        the sweeps of seeds 0 and 1 would share all trials but one."""
        name = self.sampler.name
        entropy = np.random.SeedSequence((self.sampler.seed, trials_so_far))
        seed = int(entropy.generate_state(1)[0] >> 1)  # 31 bits, as Optuna's samplers take
        if name == "grid":
            return optuna.samplers.GridSampler(self.grid() or {}, seed=self.sampler.seed)
        if name == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        if name == "qmc":
            return optuna.samplers.QMCSampler(
                seed=self.sampler.seed, warn_independent_sampling=False
            )
        if name == "gp":
            return optuna.samplers.GPSampler(seed=seed)
        return optuna.samplers.TPESampler(seed=seed)

    def make_pruner(self) -> optuna.pruners.BasePruner:
        p = self.pruner
        if p.name == "hyperband":
            return optuna.pruners.HyperbandPruner(
                min_resource=p.min_resource,
                max_resource=self.epochs,
                reduction_factor=p.reduction_factor,
            )
        if p.name == "successive_halving":
            return optuna.pruners.SuccessiveHalvingPruner(
                min_resource=p.min_resource, reduction_factor=p.reduction_factor
            )
        if p.name == "median":
            return optuna.pruners.MedianPruner(
                n_startup_trials=p.startup_trials, n_warmup_steps=p.warmup_epochs
            )
        return optuna.pruners.NopPruner()
