"""Transferability scores before training (`trainer.transferability`, LogME): one model on a
labelled dataset, or candidate bases ranked for it.

Everything a request names is looked up first, scoped by tenant, in a worker thread with a
short session: an unknown model or dataset answers at once, and no database connection is
held through the forward passes. Scoring then runs in another worker thread, one request at a
time per API process (it is CPU-bound, and a text encoder over thousands of examples takes a
while), so that it never blocks the event loop and concurrent requests queue rather than
share the cores.
"""

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
from anyio import CapacityLimiter, to_thread
from sqlalchemy.orm import Session

from app.db import session_scope
from app.models import Model
from app.problems import InvalidInput, NotFound
from app.schemas import (
    NEWEST_CANDIDATES,
    RankedModel,
    RankModelsOut,
    RankModelsRequest,
    TransferabilityOut,
    TransferabilityRequest,
)
from app.services import datasets, models, registry
from app.services.model_files import model_file
from trainer.artifact import load_weights
from trainer.data import BUILTIN_DATASETS, DatasetInfo, LabelledDataset, Split, load_dataset
from trainer.spec import FinetuneSpec, ModelSpec, SpecIssue, TrainData
from trainer.transferability import METRIC, Score, score, scoring_split
from trainer.trunk import Trunk, fresh_trunk, stored_trunk
from trainer.validation import check_spec, input_fit_issues

_scoring = CapacityLimiter(1)
# Models read when a ranking names none: the tenant's newest, of which those that fit count.
SCANNED_MODELS = 500


@dataclass(frozen=True)
class Candidate:
    """A stored model (`stored`) or a fresh architecture (`spec`), and the request field that
    names it."""

    field: str
    model_id: str | None = None
    name: str | None = None
    architecture: str = ""
    stored: Model | None = None
    spec: ModelSpec | None = None


@dataclass(frozen=True)
class Target:
    """The labelled dataset to score on, and how to load it outside the session."""

    info: DatasetInfo
    load: Callable[[], LabelledDataset]


def _target(session: Session, tenant_id: str, name: str, field: str, in_path: bool) -> Target:
    """A built-in or one of the tenant's uploads, labelled; another tenant's upload is unknown.
    Unknown: `404` when the path names it, else `422` naming `field`."""
    info = datasets.describer(session, tenant_id)(name)
    if info is None:
        if in_path:
            raise NotFound("dataset", name)
        known = ", ".join(sorted(BUILTIN_DATASETS))
        message = (
            f"unknown dataset {name!r}; use the id of an uploaded dataset or a built-in: {known}"
        )
        raise InvalidInput([SpecIssue(field, message)])
    if not info.labelled:
        message = f"{name} has no labels; a transferability score needs labelled examples"
        raise InvalidInput([SpecIssue(field, message)])
    if info.task == "token_classification":  # features per token, examples per sentence
        message = f"{name} is token tagging data, which has no transferability score"
        raise InvalidInput([SpecIssue(field, message)])
    if name in BUILTIN_DATASETS:
        return Target(info, partial(load_dataset, name))
    return Target(
        info, partial(datasets.load_labelled, datasets.get_dataset(session, tenant_id, name))
    )


def _stored(model: Model, field: str) -> Candidate:
    return Candidate(field, model.id, model.name, model.architecture, stored=model)


def _candidates(
    session: Session, tenant_id: str, info: DatasetInfo, request: RankModelsRequest
) -> list[Candidate]:
    """The request's candidates, each checked: `422` naming every one that is unknown to the
    tenant or does not read the dataset's inputs."""
    issues, chosen = [], []
    if request.model_ids is None:
        rows, _cursor = models.list_models(session, tenant_id, None, SCANNED_MODELS, None)
        fitting = [m for m in rows if not input_fit_issues(m.card, info, "model_ids")]
        chosen += [_stored(m, "model_ids") for m in fitting[:NEWEST_CANDIDATES]]
    else:
        for i, model_id in enumerate(dict.fromkeys(request.model_ids)):
            field = f"model_ids.{i}"
            model = registry.find_model(session, tenant_id, model_id)
            if model is None:
                issues.append(SpecIssue(field, f"no model {model_id!r}"))
                continue
            fit = input_fit_issues(model.card, info, field)
            issues += fit
            if not fit:
                chosen.append(_stored(model, field))
    describe = datasets.describer(session, tenant_id)
    for i, spec in enumerate(request.models):
        # An entry is what a fine-tuning job's `model` is: the same checks say whether it can
        # be built for this dataset.
        job = FinetuneSpec(kind="finetune", model=spec, data=TrainData(train=info.name))
        for issue in check_spec(job, None, describe):
            field = issue.field.removeprefix("model") if issue.field.startswith("model") else ""
            issues.append(SpecIssue(f"models.{i}{field}", issue.message))
        chosen.append(Candidate(f"models.{i}", architecture=spec.architecture, spec=spec))
    if issues:
        raise InvalidInput(issues)
    return chosen


def _trunk(candidate: Candidate, dataset: LabelledDataset, seed: int, examples: Split) -> Trunk:
    if candidate.stored is not None:  # fetched here, while scoring, from a remote store
        return stored_trunk(load_weights(model_file(candidate.stored)))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return fresh_trunk(candidate.spec, dataset, examples)


def _scores(
    target: Target, candidates: list[Candidate], fraction: float | None, seed: int
) -> tuple[int, list[Score]]:
    """Each candidate's score on the same examples, and how many they are."""
    dataset = target.load()
    examples = scoring_split(dataset, fraction, seed)
    if dataset.task == "classification" and len(examples.y.unique()) < 2:
        message = "the examples scored hold a single class; a score needs at least two"
        raise InvalidInput([SpecIssue("fraction", message)])
    if not bool((examples.y.double().reshape(len(examples), -1).std(0) > 0).any()):
        message = "no label or target varies among the examples scored"
        raise InvalidInput([SpecIssue("fraction", message)])
    scores = []
    for candidate in candidates:
        trunk = _trunk(candidate, dataset, seed, examples)
        try:
            scores.append(score(trunk, examples, dataset.task))
        except ValueError as error:  # features that are not finite
            raise InvalidInput([SpecIssue(candidate.field, str(error))]) from None
    return len(examples), scores


def _lookup_model(
    tenant_id: str, model_id: str, request: TransferabilityRequest
) -> tuple[Target, Candidate]:
    with session_scope() as session:
        model = models.get_model(session, tenant_id, model_id)
        target = _target(session, tenant_id, request.dataset, "dataset", in_path=False)
        issues = input_fit_issues(model.card, target.info, "dataset")
        if issues:
            raise InvalidInput(issues)
        return target, _stored(model, "model_id")


def _lookup_ranking(
    tenant_id: str, dataset_id: str, request: RankModelsRequest
) -> tuple[Target, list[Candidate]]:
    with session_scope() as session:
        target = _target(session, tenant_id, dataset_id, "dataset_id", in_path=True)
        return target, _candidates(session, tenant_id, target.info, request)


async def score_model(
    tenant_id: str, model_id: str, request: TransferabilityRequest
) -> TransferabilityOut:
    """`POST /v1/models/{id}/transferability`."""
    target, candidate = await to_thread.run_sync(_lookup_model, tenant_id, model_id, request)
    examples, (result,) = await to_thread.run_sync(
        _scores, target, [candidate], request.fraction, request.seed, limiter=_scoring
    )
    return TransferabilityOut(
        metric=METRIC,
        score=result.score,
        model_id=candidate.model_id,
        dataset=target.info.name,
        examples=examples,
        feature_dim=result.feature_dim,
    )


async def rank_models(tenant_id: str, dataset_id: str, request: RankModelsRequest) -> RankModelsOut:
    """`POST /v1/datasets/{id}/rank-models`: every candidate scored on the same examples, the
    highest first."""
    target, candidates = await to_thread.run_sync(_lookup_ranking, tenant_id, dataset_id, request)
    examples, scores = (0, [])
    if candidates:
        examples, scores = await to_thread.run_sync(
            _scores, target, candidates, request.fraction, request.seed, limiter=_scoring
        )
    order = sorted(range(len(candidates)), key=lambda i: -scores[i].score)
    ranking = [
        RankedModel(
            rank=rank,
            score=scores[i].score,
            model_id=candidates[i].model_id,
            model=candidates[i].spec,
            name=candidates[i].name,
            architecture=candidates[i].architecture,
            feature_dim=scores[i].feature_dim,
        )
        for rank, i in enumerate(order, 1)
    ]
    return RankModelsOut(
        metric=METRIC, dataset=target.info.name, examples=examples, ranking=ranking
    )
