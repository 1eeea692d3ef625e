"""A streamed dataset trained on several ranks, with real processes: 2 ranks of one machine
under torchrun (`trainer.launch`), 2 machines of one rank each at a c10d rendezvous, and 2
ranks stopped by SIGTERM and resumed. Each rank reads shards of its own, chosen by its global
rank (on two machines both ranks are local rank 0), and the examples an epoch sees are what
the job says they are."""

import os
import signal

import pytest
import torch
from safetensors.torch import load_file

from tests.test_distributed import finish, of_type, processes_running, start
from tests.test_nodes import free_port, start_machine
from tests.test_streaming import write_jsonl, write_parquet
from trainer import distributed
from trainer.checkpoint import INTERRUPTED_EXIT
from trainer.streaming import (
    DatasetStream,
    Example,
    TextStream,
    rank_shards,
    scan,
    shard_rows,
    share_size,
)

BATCH_SIZE = 16
EPOCHS = 3
SPEC = {
    "kind": "pretrain",
    "model": {"architecture": "transformer", "params": {"vocab_size": 200, "max_length": 16}},
    "data": {"train": "ds_corpus"},
    "method": {"name": "causal_lm", "params": {}},
    "hyperparameters": {"epochs": EPOCHS, "batch_size": BATCH_SIZE, "seed": 3},
}


def numbered(start: int, count: int) -> list[dict]:
    """Texts that name their number (`#n`), so that a test can tell which it saw."""
    return [
        {"text": f"#{n} about topic {n % 5} and words {n % 7}"} for n in range(start, start + count)
    ]


@pytest.fixture
def corpus(tmp_path) -> DatasetStream:
    """Four shards of unequal sizes, two formats: the ranks' rows cannot be equal."""
    shards = [
        write_jsonl(tmp_path / "a.jsonl", numbered(0, 400)),
        write_parquet(tmp_path / "b.parquet", numbered(400, 300)),
        write_jsonl(tmp_path / "c.jsonl", numbered(700, 250)),
        write_parquet(tmp_path / "d.parquet", numbered(950, 150)),
    ]
    summary = scan(shards, False)
    return DatasetStream(shards=summary.shards, drawn=summary.drawn)


def expected_steps(stream: DatasetStream, world: int) -> int:
    """The steps of an epoch as the docs state them: the shards shared out by training rows,
    and the epoch ends when the rank with the fewest batches of its share runs out."""
    rows = [
        sum(stream.shards[i].train_rows for i in mine) for mine in rank_shards(stream.shards, world)
    ]
    return min(n // share_size(BATCH_SIZE, world, r) for r, n in enumerate(rows))


def test_two_ranks_see_disjoint_texts_of_their_own_shards(corpus, monkeypatch):
    """Each rank's epoch, as `trainer.distributed.WORLD` numbers it: the texts the two see
    together are as many as the job says, none twice, each from a shard of its own rank."""
    shard_of = {}
    for index, shard in enumerate(corpus.shards):
        for _where, fields in shard_rows(shard, ""):
            shard_of[fields["text"]] = index
    stream = TextStream("ds_corpus", corpus)
    seen: dict[int, list[str]] = {}
    for rank in (0, 1):
        monkeypatch.setattr(distributed, "WORLD", distributed.World(rank=rank, size=2))
        batches: list[list[str]] = []

        def encode(examples: list[Example], batches=batches) -> tuple[torch.Tensor]:
            batches.append([example.text for example in examples])
            return (torch.zeros(len(examples)),)

        for share in stream.epoch_batches(torch.Generator().manual_seed(7), BATCH_SIZE, encode):
            assert share.weight == pytest.approx(len(share.tensors[0]) * 2 / BATCH_SIZE)
        assert len(batches) == expected_steps(corpus, 2)
        seen[rank] = [text for texts in batches for text in texts]
        mine = rank_shards(corpus.shards, 2)[rank]
        assert {shard_of[text] for text in seen[rank]} <= set(mine)
    together = seen[0] + seen[1]
    assert len(set(together)) == len(together) == stream.examples_per_epoch(BATCH_SIZE)
    assert len(together) == expected_steps(corpus, 2) * BATCH_SIZE


def _told(events: list[dict]) -> str:
    (message,) = [
        e["message"] for e in of_type(events, "log") if "streamed training texts" in e["message"]
    ]
    return message


def test_a_streamed_job_on_two_ranks_and_on_two_machines_trains_alike_and_resumes(tmp_path, corpus):
    streams = {"ds_corpus": corpus.model_dump(mode="json")}
    steps = expected_steps(corpus, 2)
    train_rows = sum(shard.train_rows for shard in corpus.shards)
    ranks = start(tmp_path / "ranks", SPEC, 2, streams=streams)
    port = free_port()
    leader = start_machine(tmp_path / "leader", SPEC, 2, port, leader=True, streams=streams)
    member = start_machine(tmp_path / "member", SPEC, 2, port, leader=False, streams=streams)
    stopped_dir = tmp_path / "stopped"
    stopped = start(stopped_dir, SPEC, 2, every=7, streams=streams)

    # Stopped by SIGTERM (as the supervisor stops a trainer): every rank at one checkpoint.
    while not list((stopped_dir / "checkpoints").glob("step-*.pt")):
        assert stopped.poll() is None, (stopped_dir / "stderr.log").read_text()
    os.killpg(stopped.pid, signal.SIGTERM)
    assert finish(stopped, timeout=120) and stopped.returncode == INTERRUPTED_EXIT
    assert not processes_running(stopped_dir), "a rank outlived its launcher"
    saved = torch.load(max((stopped_dir / "checkpoints").glob("step-*.pt")), weights_only=True)
    assert 0 < saved["run"]["step"] < EPOCHS * steps
    resumed = start(stopped_dir, SPEC, 2, every=7, streams=streams)

    on_ranks, on_machines, from_member = (
        finish(ranks, 300),
        finish(leader, 300),
        finish(member, 300),
    )
    after_stop = finish(resumed, 300)
    codes = (ranks.returncode, leader.returncode, member.returncode, resumed.returncode)
    assert codes == (0, 0, 0, 0), [
        (tmp_path / d / "stderr.log").read_text() for d in ("ranks", "leader", "member", "stopped")
    ]
    told = (
        f"{train_rows} streamed training texts in 4 shard(s) (each epoch sees {steps * BATCH_SIZE})"
    )
    assert told in _told(on_ranks) and told in _told(on_machines)
    assert steps * BATCH_SIZE < train_rows  # the ranks' rows differ: some are left each epoch
    for events in (on_ranks, on_machines, after_stop):
        assert of_type(events, "progress")[-1]["step"] == EPOCHS * steps
        assert of_type(events, "progress")[-1]["total_steps"] == EPOCHS * steps
    assert from_member == []
    assert [e["step"] for e in of_type(after_stop, "resumed")] == [saved["run"]["step"]]

    # The same global batches each step: on two machines each rank read the shards of its
    # global rank (by local rank, both would read rank 0's), and a resumed run read the rest of
    # its epoch, so the weights are those of the uninterrupted run.
    expected = load_file(tmp_path / "ranks" / "model.safetensors")
    machines = load_file(tmp_path / "leader" / "model.safetensors")
    after = load_file(stopped_dir / "model.safetensors")
    for name, tensor in expected.items():
        assert torch.equal(after[name], tensor), name
        assert torch.allclose(machines[name], tensor, atol=1e-6), name
