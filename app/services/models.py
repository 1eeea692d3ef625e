"""The model registry: reading models, their files, and predicting with them."""

import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sqlalchemy import select
from sqlalchemy.orm import Session
from tokenizers import Tokenizer

from app.config import get_settings
from app.models import Model
from app.problems import Conflict, InvalidInput, NotFound
from app.schemas import ModelOut, PredictResponse
from app.services.pagination import newest_first
from worker.core.architectures import Network
from worker.core.artifact import load_classifier
from worker.core.text import encode
from worker.core.validation import SpecIssue


def get_model(session: Session, model_id: str) -> Model:
    model = session.get(Model, model_id)
    if model is None:
        raise NotFound("model", model_id)
    return model


def list_models(session: Session, limit: int, cursor: str | None) -> tuple[list[Model], str | None]:
    return newest_first(session, select(Model), Model, limit, cursor)


def model_file(model: Model) -> Path:
    return get_settings().artifact_dir / model.path


def to_out(model: Model) -> ModelOut:
    card = model.card
    return ModelOut(
        id=model.id,
        name=model.name,
        architecture=model.architecture,
        params=card["params"],
        task=model.task,
        input_shape=card["input_shape"],
        labels=card.get("labels", []),
        metrics=card["metrics"],
        source_job_id=model.source_job_id,
        parent_model_id=model.parent_model_id,
        created_at=model.created_at,
        sha256=model.sha256,
        size_bytes=model.size_bytes,
    )


@dataclass(frozen=True)
class Predictor:
    """A classifier ready for inference, and how it turns request inputs into a batch."""

    network: Network
    card: dict
    tokenizer: Tokenizer | None

    def batch(self, inputs: list) -> torch.Tensor:
        if self.tokenizer is not None:
            if not all(isinstance(text, str) for text in inputs):
                issue = SpecIssue("inputs", "this text model takes a list of strings")
                raise InvalidInput([issue])
            return encode(self.tokenizer, inputs, self.card["input_shape"][0])
        expected = [len(inputs), *self.card["input_shape"]]
        try:
            array = np.asarray(inputs, dtype=np.float32)
        except (ValueError, TypeError):
            issue = SpecIssue("inputs", f"must be numbers in an array of shape {expected}")
            raise InvalidInput([issue]) from None
        if list(array.shape) != expected:
            message = f"has shape {list(array.shape)}; this model takes {expected}"
            raise InvalidInput([SpecIssue("inputs", message)])
        if not np.isfinite(array).all():
            raise InvalidInput([SpecIssue("inputs", "contains NaN or infinite values")])
        return torch.from_numpy(array)


class ModelCache:
    """Loaded models by id, least recently used first out; model files never change."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._models: OrderedDict[str, Predictor] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, model: Model) -> Predictor:
        with self._lock:
            if model.id in self._models:
                self._models.move_to_end(model.id)
                return self._models[model.id]
        network, card = load_classifier(model_file(model))
        tokenizer = Tokenizer.from_str(card["tokenizer"]) if card.get("tokenizer") else None
        predictor = Predictor(network, card, tokenizer)
        with self._lock:
            self._models[model.id] = predictor
            while len(self._models) > self._capacity:
                self._models.popitem(last=False)
        return predictor


_cache = ModelCache(capacity=8)


def predict(model: Model, inputs: list, return_embeddings: bool) -> PredictResponse:
    if model.task != "classification":
        raise Conflict(f"model {model.id} is a {model.task} model; fine-tune it to predict classes")
    labels = model.card["labels"]
    predictor = _cache.get(model)
    x = predictor.batch(inputs)
    with torch.inference_mode():
        features = predictor.network.features(x)
        probabilities = torch.softmax(predictor.network.head(features), dim=1)
    return PredictResponse(
        predictions=[labels[i] for i in probabilities.argmax(dim=1).tolist()],
        probabilities=probabilities.tolist(),
        labels=labels,
        embeddings=features.tolist() if return_embeddings else None,
    )
