"""Streamed datasets in the training core (`trainer.streaming`): checked row by row as a whole
read checks them, and trained from shard by shard, a resumed run seeing each example as often
as one never interrupted."""

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from tests.test_checkpoint import latest_checkpoint, wait_for_checkpoint, weights
from trainer.checkpoint import INTERRUPTED_EXIT
from trainer.readers import DatasetError, read_dataset
from trainer.streaming import (
    DatasetStream,
    Example,
    Shard,
    TextStream,
    row_split,
    scan,
    shard_rows,
)

TOPICS = ("sport", "business", "tech")


def write_jsonl(path: Path, rows: list[dict]) -> Shard:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return Shard(url=str(path), format="jsonl", size_bytes=path.stat().st_size)


def write_parquet(path: Path, rows: list[dict]) -> Shard:
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=100)
    return Shard(url=str(path), format="parquet", size_bytes=path.stat().st_size)


def documents(start: int, count: int, labelled: bool = True) -> list[dict]:
    """Texts `doc <n> ...`, each naming its number, so that a test can tell which it saw."""
    rows = []
    for n in range(start, start + count):
        rows.append({"text": f"doc {n} about {TOPICS[n % 3]} and words {n % 7}"})
        if labelled:
            rows[-1]["label"] = TOPICS[n % 3]
    return rows


@pytest.mark.parametrize("task", ["classification", "multilabel", "pretraining"])
def test_a_stream_check_records_what_a_whole_read_finds(tmp_path, task):
    rows = documents(0, 500)
    if task == "multilabel":
        for n, row in enumerate(rows):
            row["labels"] = [TOPICS[n % 3], TOPICS[n % 2]][: 1 + n % 2]
            del row["label"]
    shard = write_jsonl(tmp_path / "a.jsonl", rows)
    labelled = task != "pretraining"
    whole = read_dataset(
        Path(shard.url), "jsonl", labelled, task=task if labelled else "classification"
    )
    streamed = scan([shard], labelled, task)
    assert streamed.num_examples == len(whole) == 500
    assert streamed.labels == whole.labels
    if labelled:
        hot = whole.y if task == "multilabel" else (whole.y[:, None] == range(3))
        counts = {name: int(hot[:, i].sum()) for i, name in enumerate(whole.labels)}
        assert streamed.class_counts == counts
    # Every row in one part; the held-out parts drawn by place, about a tenth and a fifth.
    assert sum(streamed.splits.values()) == 500
    assert 30 < streamed.splits["validation"] < 70 and 75 < streamed.splits["test"] < 125
    assert streamed.shards[0].rows == 500
    assert streamed.shards[0].train_rows == streamed.splits["train"]


BAD_FILES = {
    "an empty text": [*documents(0, 3), {"text": " ", "label": "sport"}],
    "an unknown field": [*documents(0, 3), {"text": "x", "label": "sport", "lang": "en"}],
    "a missing label": [*documents(0, 3), {"text": "x"}],
    "one class": [{"text": f"t{n}", "label": "sport"} for n in range(5)],
    "a split on some lines": [{**documents(0, 1)[0], "split": "train"}, *documents(1, 3)],
    "an unknown split": [{**row, "split": "dev"} for row in documents(0, 3)],
    "nothing to train on": [{**row, "split": "test"} for row in documents(0, 3)],
}


@pytest.mark.parametrize("rows", BAD_FILES.values(), ids=BAD_FILES.keys())
def test_a_stream_check_refuses_what_a_whole_read_refuses(tmp_path, rows):
    shard = write_jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(DatasetError) as whole:
        from trainer.data import read_file_dataset

        read_file_dataset("x", Path(shard.url), "jsonl", True)
    with pytest.raises(DatasetError) as streamed:
        scan([shard], True)
    assert str(streamed.value) == str(whole.value)


def test_shards_are_checked_as_one_dataset_naming_the_shard_and_row(tmp_path):
    first = write_parquet(tmp_path / "a.parquet", documents(0, 250))
    second_rows = documents(250, 250)
    second_rows[170]["text"] = ""
    second = write_parquet(tmp_path / "b.parquet", second_rows)
    where = lambda _i, shard: f"shard '{Path(shard.url).name}', "  # noqa: E731
    with pytest.raises(DatasetError, match=r"^shard 'b.parquet', row 171: `text` must be"):
        scan([first, second], True, "classification", where)
    # A split given in one shard is given in every shard.
    split = write_jsonl(tmp_path / "s.jsonl", [{**r, "split": "train"} for r in documents(0, 5)])
    plain = write_jsonl(tmp_path / "p.jsonl", documents(5, 5))
    with pytest.raises(DatasetError, match=r"^shard 'p.jsonl', line 1, field 'split'"):
        scan([split, plain], True, "classification", where)
    # A parquet column that no text example has is refused by name, as a jsonl field is.
    extra = write_parquet(tmp_path / "e.parquet", [{**r, "lang": "en"} for r in documents(0, 5)])
    with pytest.raises(DatasetError, match=r"^shard 'e.parquet', row 1, field 'lang'"):
        scan([extra], True, "classification", where)


def _stream(tmp_path: Path) -> tuple[TextStream, list[str]]:
    """A stream of three shards of two formats, more rows than the shuffle buffer holds, of
    texts labelled by topic."""
    from trainer import streaming

    shards = [
        write_jsonl(tmp_path / "a.jsonl", documents(0, 700)),
        write_parquet(tmp_path / "b.parquet", documents(700, 900)),
        write_jsonl(tmp_path / "c.jsonl", documents(1600, 400)),
    ]
    summary = scan(shards, True)
    checked = DatasetStream(shards=summary.shards, drawn=summary.drawn, labels=summary.labels)
    stream = TextStream("ds_test", checked)
    train = [
        row["text"]
        for index, shard in enumerate(summary.shards)
        for number, (_w, row) in enumerate(streaming.shard_rows(shard, ""))
        if row_split(None, streaming.row_draw(index, number), summary.drawn) == "train"
    ]
    assert len(train) == summary.splits["train"]
    return stream, train


def _epoch(stream: TextStream, generator: torch.Generator, skip: int = 0) -> list[str]:
    """The texts of an epoch's batches, those of the first `skip` batches left out."""
    batches: list[list[str]] = []

    def encode(examples: list[Example]) -> tuple[torch.Tensor]:
        batches.append([example.text for example in examples])
        return (torch.zeros(len(examples), 1),)

    for share in stream.epoch_batches(generator, 64, encode):
        assert share.weight == len(share.tensors[0]) / 64
    return [text for texts in batches[skip:] for text in texts]


def test_an_epoch_sees_every_training_text_once_and_a_resumed_one_sees_the_rest(
    tmp_path, monkeypatch
):
    from trainer import streaming

    monkeypatch.setattr(streaming, "SHUFFLE_BUFFER", 200)
    stream, train = _stream(tmp_path)
    generator = torch.Generator().manual_seed(5)
    state = generator.get_state()
    first = _epoch(stream, generator)
    assert sorted(first) == sorted(train)  # each training text once, no other text
    assert first != train  # shuffled: by shard order and through the buffer
    second = _epoch(stream, generator)
    assert sorted(second) == sorted(train) and second != first  # another order each epoch
    assert stream.steps_per_epoch(64) == -(-len(train) // 64)
    # A run stopped after 9 steps draws the epoch again from the generator's state at its
    # start and skips what it did: the rest of the same epoch, each text once in all.
    generator.set_state(state)
    done = first[: 9 * 64]
    rest = _epoch(stream, generator, skip=9)
    assert done + rest == first
    assert Counter(done + rest) == Counter(train)


def test_shards_are_shared_out_among_ranks_by_their_training_rows():
    from trainer.streaming import rank_shards

    shards = tuple(
        Shard(url=f"s{i}", format="jsonl", size_bytes=1, rows=n, train_rows=n)
        for i, n in enumerate([500, 100, 400, 300, 200])
    )
    assert rank_shards(shards, 2) == [[0, 4, 1], [2, 3]]  # 800 and 700 rows
    assert rank_shards(shards, 1) == [[0, 2, 3, 4, 1]]


LM_SPEC = {
    "kind": "pretrain",
    "model": {"architecture": "transformer", "params": {"vocab_size": 200, "max_length": 16}},
    "data": {"train": "ds_corpus"},
    "method": {"name": "causal_lm", "params": {}},
    "hyperparameters": {"epochs": 2, "batch_size": 16, "lr_schedule": "cosine", "seed": 3},
}


# Supervised text classification: each text names its topic, its label.
CLASSIFIER_SPEC = {
    "kind": "finetune",
    "model": {"architecture": "transformer", "params": {"vocab_size": 200, "max_length": 16}},
    "data": {"train": "ds_corpus"},
    "method": {"name": "supervised", "params": {}},
    "hyperparameters": {"epochs": 2, "batch_size": 16, "lr_schedule": "cosine", "seed": 3},
}


def _start_streamed(
    run_dir: Path, stream: DatasetStream, every: int, spec: dict
) -> subprocess.Popen:
    run_dir.mkdir(parents=True, exist_ok=True)
    run = {
        "job_id": "job_test",
        "model_id": "model_test",
        "spec": spec,
        "streams": {"ds_corpus": stream.model_dump(mode="json")},
        "output_path": str(run_dir / "model.safetensors"),
        "checkpoint_dir": str(run_dir / "checkpoints"),
        "checkpoint_every_steps": every,
    }
    (run_dir / "run.json").write_text(json.dumps(run))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "trainer.main", str(run_dir)]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)


@pytest.mark.parametrize("spec", [LM_SPEC, CLASSIFIER_SPEC], ids=["causal_lm", "supervised"])
def test_a_streamed_run_resumed_after_sigterm_equals_an_uninterrupted_one(tmp_path, spec):
    """The checkpoint records the epoch's generator state and the batches done: the resumed
    run reads the same epoch again, skips them, and ends with the very same weights, so each
    text was seen exactly as often as without the stop."""
    stream, train = _stream(tmp_path)
    plain = _start_streamed(tmp_path / "plain", stream.stream, 10**6, spec)
    output, _ = plain.communicate(timeout=300)
    assert plain.returncode == 0
    events = [json.loads(line) for line in output.splitlines()]
    logs = [e["message"] for e in events if e["type"] == "log"]
    told = f"{len(train)} streamed training texts in 3 shard(s) (each epoch sees {len(train)})"
    assert any(told in message for message in logs), logs
    if spec is CLASSIFIER_SPEC:  # the labels checked, learnt from the texts that name them
        (result,) = [e for e in events if e["type"] == "result"]
        card = result["card"]
        assert card["labels"] == list(stream.stream.labels) == sorted(TOPICS)
        assert card["metrics"]["train_examples"] == len(train)
        assert card["metrics"]["test_accuracy"] > 0.9, card["metrics"]

    run_dir = tmp_path / "stopped"
    first = _start_streamed(run_dir, stream.stream, 20, spec)
    wait_for_checkpoint(run_dir, first)
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=60) == INTERRUPTED_EXIT
    saved = torch.load(latest_checkpoint(run_dir), weights_only=True)["run"]
    steps_per_epoch = -(-len(train) // 16)
    assert 0 < saved["step"] < 2 * steps_per_epoch
    second = _start_streamed(run_dir, stream.stream, 20, spec)
    output, _ = second.communicate(timeout=300)
    assert second.returncode == 0
    events = [json.loads(line) for line in output.splitlines()]
    assert [e["step"] for e in events if e["type"] == "resumed"] == [saved["step"]]
    resumed, uninterrupted = weights(run_dir), weights(tmp_path / "plain")
    for name, tensor in uninterrupted.items():
        assert torch.equal(resumed[name], tensor), name


@pytest.mark.parametrize("task", ["classification", "multilabel"])
def test_a_streams_labels_are_encoded_as_a_whole_read_encodes_them(tmp_path, task):
    """The labels a stream's batches carry: those its check recorded, in the same places as
    a whole read of the file puts them."""
    rows = documents(0, 300)
    if task == "multilabel":
        for n, row in enumerate(rows):
            row["labels"] = [TOPICS[n % 3], TOPICS[n % 2]][: 1 + n % 2]
            del row["label"]
    shard = write_jsonl(tmp_path / "a.jsonl", rows)
    summary = scan([shard], True, task)
    checked = DatasetStream(
        shards=summary.shards, drawn=summary.drawn, labels=summary.labels, task=task
    )
    stream = TextStream("ds_test", checked)
    examples = [
        Example(fields["text"], fields.get("labels", fields.get("label")))
        for _where, fields in shard_rows(shard, "")
    ]
    whole = read_dataset(Path(shard.url), "jsonl", True, task=task)
    split = stream.split(examples)
    assert stream.dataset().labels == whole.labels
    assert split.texts == whole.texts
    assert torch.equal(split.y, torch.as_tensor(whole.y).to(split.y.dtype))
