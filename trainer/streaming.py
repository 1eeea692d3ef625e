"""Text datasets larger than memory, read as streams of shards.

A streamed dataset is a list of shards (a large `.jsonl` upload is one; a dataset registered by
reference to an S3 prefix is every `.jsonl` or `.parquet` file under it), each holding text
examples with the fields of a jsonl text file (`text`; `label` or `labels`; `split`). They are
read one line or one batch of rows at a time, so memory stays flat however large they are:

- `scan` checks every row as `trainer.readers.jsonl` checks a file it reads whole (the same
  code: `jsonl.text_rows`), counting what the dataset's record keeps;
- `TextStream` trains from them: its shards shared out among the ranks, shuffled by shard
  order and by a buffer, in batches that are each rank's share of the global batch; its labels
  (those `scan` recorded, never a whole read's) encoded a batch at a time; bounded samples of
  its splits for what must be held in memory (a fresh tokenizer's texts, validation, test).

Splits. A file that gives `split` on its rows keeps it; a held-out part that it leaves empty
(or every part, when it gives none) is drawn from its training rows by a hash of each row's
place (its shard's index and its row number): rows whose draw is in [0.7, 0.8) validate and
[0.8, 1) test. So the split of a row is known wherever it is read, without a pass over the
whole dataset, and is the same on every machine.
"""

import itertools
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Literal, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from pydantic import BaseModel, ConfigDict

from trainer import distributed
from trainer.data import UNLABELLED, LabelledDataset, Split
from trainer.readers import jsonl
from trainer.readers.common import DatasetError
from trainer.training import TrainerError, batch_sizes

STREAM_FORMATS = ("jsonl", "parquet")
HELD_OUT = (("validation", 0.7), ("test", 0.8))  # a drawn part and where its draws start
PARQUET_BATCH_ROWS = 1024
# What one batch of parquet rows may decode to: a dictionary-encoded bomb is refused before its
# strings are repeated (as `trainer.readers.tables` refuses a whole table).
MAX_BATCH_BYTES = 256 * 1024**2
SHUFFLE_BUFFER = 10_000  # rows each rank shuffles among as it reads its shards
# The bounded samples of a streamed dataset held in memory (`TextStream.sample`): its first
# training texts (what a fresh tokenizer is trained on, a head fitted to) and its first
# validation and test texts (what a job validates and tests on).
SAMPLE_TEXTS = {"train": 20_000, "validation": 10_000, "test": 10_000}


class Shard(BaseModel):
    """One file of a streamed dataset, as it was checked."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str  # a local path, or s3://bucket/key
    format: Literal["jsonl", "parquet"]
    size_bytes: int
    etag: str | None = None  # an S3 object's ETag when it was checked: a changed one is refused
    rows: int = 0
    train_rows: int = 0


class DatasetStream(BaseModel):
    """A streamed dataset as the trainer reads it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    shards: tuple[Shard, ...]
    drawn: tuple[str, ...]  # the held-out parts drawn from the rows given `train` (see above)
    s3_endpoint_url: str | None = None  # the operator's S3 server, for s3:// shards
    # Its labels as `scan` found them (the order a whole read gives them), and the task head
    # they train: () for texts without labels.
    labels: tuple[str, ...] = ()
    task: Literal["classification", "multilabel"] = "classification"


# Reading shards


def _changed(shard: Shard) -> TrainerError:
    """A shard that is not what was checked: it changed or went since it was recorded."""
    message = f"shard '{shard.url}' changed since the dataset was registered; register it again"
    return TrainerError("dataset_changed", message)


@contextmanager
def open_shard(shard: Shard, endpoint_url: str | None = None) -> Iterator[BinaryIO]:
    """The shard's bytes, read as they are needed. An S3 object must still have the ETag it
    was checked with, and every range read of it asks for that ETag (s3fs sends If-Match), so a
    trainer reads exactly what was checked or fails."""
    if not shard.url.startswith("s3://"):
        with open(shard.url, "rb") as file:
            yield file
        return
    from s3fs.utils import FileExpired

    fs = s3_filesystem(endpoint_url)
    try:
        with fs.open(shard.url, "rb", block_size=8 * 1024**2, cache_type="readahead") as file:
            if shard.etag is not None and file.details.get("ETag") != shard.etag:
                raise _changed(shard)
            yield file
    except (FileExpired, FileNotFoundError):  # replaced while read, or gone
        raise _changed(shard) from None


def s3_filesystem(endpoint_url: str | None):
    import s3fs

    options = {"client_kwargs": {"endpoint_url": endpoint_url}} if endpoint_url else {}
    return s3fs.S3FileSystem(**options)


def shard_rows(
    shard: Shard, where_prefix: str, endpoint_url: str | None = None
) -> Iterator[tuple[str, dict]]:
    """(where, fields) for each row of a shard, one at a time: a jsonl line's object, or a
    parquet row's non-null columns. `where` names the shard (unless the prefix is empty) and
    the line or row."""
    with open_shard(shard, endpoint_url) as file:
        if shard.format == "jsonl":
            for number, fields in jsonl.objects(file):
                yield f"{where_prefix}line {number}", fields
        else:
            yield from _parquet_rows(file, where_prefix)


def _parquet_rows(file: BinaryIO, where_prefix: str) -> Iterator[tuple[str, dict]]:
    try:
        schema = pq.ParquetFile(file).schema_arrow
        text = [f.name for f in schema if pa.types.is_string(f.type)]
        number = 0
        batches = pq.ParquetFile(file, read_dictionary=text).iter_batches(PARQUET_BATCH_ROWS)
        for batch in batches:
            _check_batch_size(batch, f"{where_prefix}row {number + 1}")
            for row in batch.to_pylist():
                number += 1
                fields = {name: value for name, value in row.items() if value is not None}
                yield f"{where_prefix}row {number}", fields
    except DatasetError:
        raise
    except (ValueError, OSError, pa.ArrowException) as error:
        where = where_prefix.removesuffix(", ") or "file"
        raise DatasetError(where, f"not a valid parquet file: {error}") from None


def _check_batch_size(batch: pa.RecordBatch, where: str) -> None:
    """A batch's text, counted from its dictionaries before any string is repeated."""
    size = batch.nbytes
    for column in batch.columns:
        if pa.types.is_dictionary(column.type):
            lengths = pc.take(pc.binary_length(column.dictionary), column.indices)
            size += pc.sum(lengths).as_py() or 0
    if size > MAX_BATCH_BYTES:
        message = (
            f"{PARQUET_BATCH_ROWS} rows from here decode to about {size} bytes; at most "
            f"{MAX_BATCH_BYTES} are allowed"
        )
        raise DatasetError(where, message)


# Splits


def _mix(value: int) -> int:
    """splitmix64's finaliser: 64 well-mixed bits of `value`."""
    value = (value + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return value ^ (value >> 31)


def row_draw(shard_index: int, row: int) -> float:
    """A row's draw in [0, 1), from its place alone."""
    return _mix((shard_index << 40) ^ row) / 2.0**64


def held_out(draw: float) -> str | None:
    """The held-out part a training row's draw falls in, if it is drawn (see above)."""
    part = None
    for name, start in HELD_OUT:
        if draw >= start:
            part = name
    return part


def row_split(given: str | None, draw: float, drawn: Iterable[str]) -> str:
    if given not in (None, "train"):
        return given
    part = held_out(draw)
    return part if part is not None and part in drawn else "train"


# Checking


@dataclass
class _ShardCounts:
    rows: int = 0
    given: Counter = field(default_factory=Counter)  # rows given validation or test
    train_draws: Counter = field(default_factory=Counter)  # rows given train, by held_out part


@dataclass(frozen=True)
class StreamSummary:
    """What checking every row of a streamed dataset found: what its record keeps."""

    num_examples: int
    labels: tuple[str, ...]
    class_counts: dict[str, int]
    splits: dict[str, int]
    shards: tuple[Shard, ...]  # with their rows and training rows
    drawn: tuple[str, ...]


def scan(
    shards: Iterable[Shard],
    labelled: bool,
    task: str = "classification",
    where_of: Callable[[int, Shard], str] = lambda _i, _shard: "",
    endpoint_url: str | None = None,
) -> StreamSummary:
    """Every row of every shard checked (`jsonl.text_rows`) and counted, with flat memory;
    raises `DatasetError` naming the first row that is wrong, as reading it whole would.
    `where_of(index, shard)` prefixes the place of a shard's rows in messages."""
    task = task if labelled else "classification"
    shards = tuple(shards)
    counts = [_ShardCounts() for _ in shards]
    labels: Counter = Counter()
    first_gave_split: bool | None = None
    for index, shard in enumerate(shards):
        lines = shard_rows(shard, where_of(index, shard), endpoint_url)
        rows = jsonl.text_rows(lines, labelled, task, first_gave_split)
        for number, (_text, label, split) in enumerate(rows):
            first_gave_split = split is not None
            count = counts[index]
            count.rows += 1
            if split in ("validation", "test"):
                count.given[split] += 1
            else:
                count.train_draws[held_out(row_draw(index, number))] += 1
            if labelled:
                labels.update(label if task == "multilabel" else [str(label)])
    total = sum(c.rows for c in counts)
    if total == 0:
        raise DatasetError("file", "no examples; every line is blank")
    names: tuple[str, ...] = ()
    if labelled:  # the whole-file checks of labels, on the distinct ones
        distinct = [[name] for name in labels] if task == "multilabel" else list(labels)
        names = jsonl.encode_text_labels(distinct, task)[1]
    given = sum((c.given for c in counts), Counter())
    drawn = tuple(part for part in ("validation", "test") if given[part] == 0)
    shard_train = [
        sum(n for part, n in c.train_draws.items() if part is None or part not in drawn)
        for c in counts
    ]
    if sum(shard_train) == 0:
        raise DatasetError("split", "no example is assigned to `train`")
    splits = {"train": sum(shard_train)}
    for part in ("validation", "test"):
        from_train = sum(c.train_draws[part] for c in counts) if part in drawn else 0
        splits[part] = given[part] + from_train
    return StreamSummary(
        num_examples=total,
        labels=names,
        class_counts={name: labels[name] for name in names},
        splits=splits,
        shards=tuple(
            s.model_copy(update={"rows": c.rows, "train_rows": t})
            for s, c, t in zip(shards, counts, shard_train, strict=True)
        ),
        drawn=drawn,
    )


# Training


def rank_shards(shards: tuple[Shard, ...], world: int) -> list[list[int]]:
    """Each rank's shards (indices), balanced by their training rows: the largest first, each
    to the rank with the fewest rows so far (ties to the lower rank). The same every epoch, so
    that every epoch has the same number of steps."""
    order = sorted(range(len(shards)), key=lambda i: (-shards[i].train_rows, i))
    ranks: list[list[int]] = [[] for _ in range(world)]
    load = [0] * world
    for index in order:
        rank = min(range(world), key=lambda r: (load[r], r))
        ranks[rank].append(index)
        load[rank] += shards[index].train_rows
    return ranks


def share_size(batch_size: int, world: int, rank: int) -> int:
    """A rank's share of a global batch, as `distributed.shard` cuts one (`tensor_split`)."""
    return batch_size // world + (rank < batch_size % world)


class Example(NamedTuple):
    """A text example as a stream reads it."""

    text: str
    label: Any  # as the file gives it: a class (`label`), a list (`labels`), None unlabelled


@dataclass(frozen=True)
class TextStream:
    """The training texts of a streamed dataset, in batches of this rank's share."""

    name: str
    stream: DatasetStream

    def dataset(self) -> LabelledDataset:
        """What the dataset is, without its examples: its labels are those checked."""
        labels, task = self.stream.labels, self.stream.task
        return LabelledDataset(self.name, "text", (), labels, {}, task=task)

    def sample(self, part: str) -> Split:
        """The first `SAMPLE_TEXTS[part]` examples of a split, in shard order."""
        every_shard = range(len(self.stream.shards))
        return self.split(
            list(itertools.islice(self._examples(every_shard, part), SAMPLE_TEXTS[part]))
        )

    def split(self, examples: list[Example]) -> Split:
        """Examples with their labels encoded as a whole read encodes them: a class's index
        (int64), a label set's indicators (float32, multilabel); `UNLABELLED` without."""
        texts = tuple(example.text for example in examples)
        labels = self.stream.labels
        if not labels:
            return Split(torch.full((len(texts),), UNLABELLED), texts=texts)
        index = {name: i for i, name in enumerate(labels)}
        if self.stream.task == "multilabel":
            y = torch.zeros(len(texts), len(labels))
            for row, example in enumerate(examples):
                y[row, [index[str(name)] for name in example.label]] = 1.0
            return Split(y, texts=texts)
        return Split(torch.tensor([index[str(e.label)] for e in examples]), texts=texts)

    def _examples(self, indices: Iterable[int], part: str) -> Iterator[Example]:
        for index in indices:
            shard = self.stream.shards[index]
            rows = shard_rows(shard, "", self.stream.s3_endpoint_url)
            for number, (_where, fields) in enumerate(rows):
                split = row_split(fields.get("split"), row_draw(index, number), self.stream.drawn)
                if split == part:
                    yield Example(fields["text"], fields.get("labels", fields.get("label")))

    def describe(self, batch_size: int) -> str:
        """What a job's log says of its training examples."""
        return (
            f"{self.train_rows()} streamed training texts in {len(self.stream.shards)} shard(s) "
            f"(each epoch sees {self.examples_per_epoch(batch_size)})"
        )

    def steps_per_epoch(self, batch_size: int) -> int:
        """The steps every rank takes in an epoch: one rank alone sees every training row (a
        last batch of one joins the one before it); with several, the epoch ends when the rank
        with the fewest batches runs out, and the rows other ranks have left are not seen in it
        (`examples_per_epoch`)."""
        world = distributed.WORLD.size
        if world == 1:
            return len(batch_sizes(self.train_rows(), batch_size))
        rows = [sum(self.stream.shards[i].train_rows for i in r) for r in self._ranks()]
        return min(n // share_size(batch_size, world, r) for r, n in enumerate(rows))

    def train_rows(self) -> int:
        return sum(shard.train_rows for shard in self.stream.shards)

    def examples_per_epoch(self, batch_size: int) -> int:
        if distributed.WORLD.size == 1:
            return self.train_rows()
        return self.steps_per_epoch(batch_size) * batch_size

    def _ranks(self) -> list[list[int]]:
        world = distributed.WORLD.size
        if len(self.stream.shards) < world:
            message = (
                f"{self.name} has {len(self.stream.shards)} shard(s); streamed on {world} "
                "processes, each reads shards of its own: give it at least as many shards"
            )
            raise TrainerError("invalid_data", message)
        return rank_shards(self.stream.shards, world)

    def epoch_batches(
        self,
        generator: torch.Generator,
        batch_size: int,
        encode: Callable[[list[Example]], tuple[torch.Tensor, ...]],
    ) -> Iterator[distributed.Share]:
        """An epoch's batches of this rank's share, each examples encoded as `encode` says: the
        rank's shards in an order drawn from `generator` (the same draw on every rank), their
        rows shuffled through a buffer of `SHUFFLE_BUFFER`. Deterministic given the generator's
        state, so a resumed run draws the same epoch again and skips the batches it did."""
        world, rank = distributed.WORLD.size, distributed.WORLD.rank
        seed = int(torch.randint(2**62, (1,), generator=generator))
        rng = np.random.default_rng([seed, rank])
        mine = self._ranks()[rank]
        order = [mine[i] for i in rng.permutation(len(mine))]
        examples = _buffer_shuffled(self._examples(order, "train"), rng)
        steps = self.steps_per_epoch(batch_size)
        sizes = (
            batch_sizes(self.train_rows(), batch_size)
            if world == 1
            else [share_size(batch_size, world, rank)] * steps
        )
        for size in sizes[:steps]:
            batch = [next(examples) for _ in range(size)]
            yield distributed.Share(encode(batch), size * world / batch_size)


def _buffer_shuffled(items: Iterator[Example], rng: np.random.Generator) -> Iterator[Example]:
    """`items` in a random order, holding at most `SHUFFLE_BUFFER` of them at once: each new
    item takes the place of one drawn from the buffer, which goes out; the rest go out
    shuffled at the end."""
    buffer: list[Example] = []
    for item in items:
        if len(buffer) < SHUFFLE_BUFFER:
            buffer.append(item)
            continue
        place = int(rng.integers(SHUFFLE_BUFFER))
        yield buffer[place]
        buffer[place] = item
    for place in rng.permutation(len(buffer)):
        yield buffer[place]


# Streamed datasets this process was handed, by name (`trainer.main`).
_STREAMS: dict[str, TextStream] = {}


def register_stream(name: str, stream: DatasetStream) -> None:
    _STREAMS[name] = TextStream(name, stream)


def stream_of(name: str) -> TextStream | None:
    """The stream a dataset is read from, if it is streamed."""
    return _STREAMS.get(name)
