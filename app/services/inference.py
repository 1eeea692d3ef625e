"""Serving: loaded models (classifiers' and regressors' predictors, language models) in one
least-recently-used cache bounded in bytes; concurrent predictions for one model run as one
batch.

Micro-batching: a request that arrives while its model is busy waits in that model's queue;
when the model is free, everything queued runs as one forward pass (up to `MAX_BATCH_ROWS`).
An idle model runs a lone request at once, so batching adds no wait at low load.
"""

import queue
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np
import torch
from tokenizers import Tokenizer

from app.problems import InvalidInput
from app.services.clips import clip_batch
from trainer.architectures import Network
from trainer.artifact import load_predictor
from trainer.heads import HEADS
from trainer.spec import SpecIssue
from trainer.table_rows import RowError, encode_rows
from trainer.text import encode, encode_words

MAX_BATCH_ROWS = 4096
# Below this many rows a forward pass runs on one thread: spreading a few samples over
# intra-op threads costs more than it saves (one CNN sample: 1.3 ms on 2 threads, 0.3 ms on 1).
SMALL_BATCH_ROWS = 32
Outputs = tuple[torch.Tensor, torch.Tensor]  # what the head serves (trainer.heads), embeddings


class MicroBatcher:
    def __init__(self, network: Network, serve: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self._network, self._serve_outputs = network, serve
        self._queue: queue.SimpleQueue[tuple[torch.Tensor, Future] | None] = queue.SimpleQueue()
        threading.Thread(target=self._serve, daemon=True, name="micro-batcher").start()

    def submit(self, x: torch.Tensor) -> Future[Outputs]:
        """Queue a batch; the future resolves when its forward pass is done."""
        done: Future[Outputs] = Future()
        self._queue.put((x, done))
        return done

    def close(self) -> None:
        self._queue.put(None)

    def _serve(self) -> None:
        # This thread's own setting (OpenMP keeps one per thread), changed only here.
        default = threads = torch.get_num_threads()
        while (first := self._queue.get()) is not None:
            waiting, rows = [first], len(first[0])
            while rows < MAX_BATCH_ROWS:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)  # finish this batch, then stop
                    break
                waiting.append(item)
                rows += len(item[0])
            wanted = 1 if rows < SMALL_BATCH_ROWS else default
            if wanted != threads:
                torch.set_num_threads(threads := wanted)
            self._run(waiting)

    def _run(self, waiting: list[tuple[torch.Tensor, Future]]) -> None:
        try:
            with torch.inference_mode():
                inputs = torch.cat([x for x, _ in waiting])
                outputs, features = self._network.outputs_and_features(inputs)
                served = self._serve_outputs(outputs)
        except Exception as error:  # every waiting request learns of it
            for _, done in waiting:
                done.set_exception(error)
            return
        start = 0
        for x, done in waiting:
            end = start + len(x)
            done.set_result((served[start:end], features[start:end]))
            start = end


@dataclass(frozen=True)
class Batch:
    """A request's inputs as the model takes them (`x`) and, for a token tagger, each input's
    words and the position of each word's first piece (`trainer.text.encode_words`)."""

    x: torch.Tensor
    words: list[list[str]] | None = None
    first: torch.Tensor | None = None


def words_of(inputs: list) -> list[list[str]]:
    """A token tagger's inputs as words: each a text, split at whitespace, or a list of words
    (as tagging's training data gives them), or a 422 naming the input."""
    words = []
    for i, item in enumerate(inputs):
        if isinstance(item, str):
            item = item.split()
        if (
            not isinstance(item, list)
            or not item
            or not all(isinstance(word, str) and word.strip() for word in item)
        ):
            message = "must be a text, or a non-empty list of words (non-empty strings)"
            raise InvalidInput([SpecIssue(f"inputs[{i}]", message)])
        words.append(item)
    return words


class Predictor:
    """A classifier or regressor ready for inference, and how request inputs become its
    batch."""

    def __init__(self, path: Path) -> None:
        self.network, self.card = load_predictor(path)
        tokenizer = self.card.tokenizer
        self.tokenizer = Tokenizer.from_str(tokenizer) if tokenizer else None
        tensors = [*self.network.parameters(), *self.network.buffers()]
        self.size_bytes = sum(t.numel() * t.element_size() for t in tensors)
        self.batcher = MicroBatcher(self.network, HEADS[self.card.task].serve)

    def batch(self, inputs: list | np.ndarray) -> Batch:
        """The request's inputs as the model's batch, and what its answer needs of them."""
        if self.card.task == "token_classification":
            words = words_of(inputs)
            ids, first = encode_words(self.tokenizer, words, self.card.input_shape[0])
            for i, (row_words, row_first) in enumerate(zip(words, first, strict=True)):
                if int(row_first.max()) < len(row_words) - 1:
                    message = (
                        f"its {len(row_words)} words make more than the model's "
                        f"{self.card.input_shape[0]} tokens; split it"
                    )
                    raise InvalidInput([SpecIssue(f"inputs[{i}]", message)])
            return Batch(ids, words, first)
        return Batch(self.inputs(inputs))

    def inputs(self, inputs: list | np.ndarray) -> torch.Tensor:
        """The request's inputs as a batch, or a 422 saying how they differ from the spec. A
        tabular model also takes rows as objects keyed by column name (`trainer.table_rows`)."""
        if self.card.log_mel is not None:
            return clip_batch(inputs, self.card)
        if self.tokenizer is not None:
            if not isinstance(inputs, list) or not all(isinstance(t, str) for t in inputs):
                issue = SpecIssue("inputs", "this text model takes a list of strings")
                raise InvalidInput([issue])
            return encode(self.tokenizer, inputs, self.card.input_shape[0])
        if self.card.task == "forecasting" and _keyed_rows(inputs):
            inputs = context_values(inputs, self.card.feature_names, self.card.input_shape[0])
        elif self.card.columns and isinstance(inputs, list) and isinstance(inputs[0], dict):
            try:
                return torch.from_numpy(encode_rows(inputs, self.card.columns))
            except RowError as error:
                raise InvalidInput([SpecIssue(error.where, error.message)]) from None
        expected = [len(inputs), *self.card.input_shape]
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


def _keyed_rows(inputs: list | np.ndarray) -> bool:
    """Whether the inputs are contexts of rows keyed by column name, not numbers."""
    first = inputs[0] if len(inputs) else None
    return isinstance(first, list) and bool(first) and isinstance(first[0], dict)


def context_values(inputs: list, columns: list[str], rows: int) -> list[list[list[Any]]]:
    """Forecasting contexts given as the table has them (each its last `rows` rows, objects
    keyed by column name) as the model's numbers (rows, columns), or a 422 naming each input
    of the wrong length, and each missing or unknown column where it first occurs."""
    issues: dict[str, SpecIssue] = {}  # one per problem, where it first occurs
    known = set(columns)
    for i, context in enumerate(inputs):
        if not isinstance(context, list) or not all(isinstance(row, dict) for row in context):
            issues[f"{i}"] = SpecIssue(f"inputs[{i}]", "must be a list of rows keyed by column")
            continue
        if len(context) != rows:
            message = f"has {len(context)} rows; this model reads the last {rows}"
            issues[f"{i}"] = SpecIssue(f"inputs[{i}]", message)
        for r, row in enumerate(context):
            for name in known - row.keys():
                message = f"no value for column {name!r}; the model reads {columns}"
                issues.setdefault(name, SpecIssue(f"inputs[{i}][{r}].{name}", message))
            for name in row.keys() - known:
                message = f"unknown column {name!r}; the model reads {columns}"
                issues.setdefault(name, SpecIssue(f"inputs[{i}][{r}].{name}", message))
    if issues:
        raise InvalidInput(list(issues.values()))
    return [[[row[name] for name in columns] for row in context] for context in inputs]


class Loaded(Protocol):
    """A model loaded from its file for serving: a `Predictor`, a `LanguageModel`."""

    size_bytes: int  # its weights'


L = TypeVar("L", bound=Loaded)


class ModelCache:
    """Loaded models of every kind by model id, in one budget: least recently used out first
    once over `max_bytes` of weights. Model files never change, so a cached model never goes
    stale; a model's kind follows from its task, which never changes either."""

    def __init__(self, max_bytes: int) -> None:
        self._max_bytes = max_bytes
        self._loaded: OrderedDict[str, Loaded] = OrderedDict()
        self._lock = threading.Lock()

    def peek(self, model_id: str) -> Loaded | None:
        """The model if it is loaded; never loads."""
        with self._lock:
            loaded = self._loaded.get(model_id)
            if loaded is not None:
                self._loaded.move_to_end(model_id)
            return loaded

    def get(self, model_id: str, path: Path, load: Callable[[Path], L]) -> L:
        """The model, loaded from `path` by `load` unless it is cached."""
        with self._lock:
            if model_id in self._loaded:
                self._loaded.move_to_end(model_id)
                return self._loaded[model_id]
        loaded = load(path)
        with self._lock:
            kept = self._loaded.setdefault(model_id, loaded)
            self._loaded.move_to_end(model_id)
            while len(self._loaded) > 1 and self.size_bytes > self._max_bytes:
                _id, evicted = self._loaded.popitem(last=False)
                _release(evicted)
        if kept is not loaded:  # another request loaded it meanwhile
            _release(loaded)
        return kept

    def drop(self, model_id: str) -> None:
        with self._lock:
            loaded = self._loaded.pop(model_id, None)
        if loaded is not None:
            _release(loaded)

    @property
    def size_bytes(self) -> int:
        return sum(loaded.size_bytes for loaded in self._loaded.values())


def _release(loaded: Loaded) -> None:
    """Out of the cache: a predictor's batcher thread ends. Other kinds hold no thread; their
    memory goes with the last reference (a generation under way keeps its model until done)."""
    if isinstance(loaded, Predictor):
        loaded.batcher.close()
