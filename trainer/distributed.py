"""Data-parallel training, for the ranks that `trainer.launch` starts under torchrun.

Each rank takes its share of every global batch (the job's `batch_size` is the global batch),
DistributedDataParallel averages the gradients (gloo on the CPU, NCCL on CUDA, one GPU per
rank), and the steps equal a single process's on the whole batch, up to float reduction
order. Rank 0 alone reports events, validates, writes checkpoints and the model.

A process that `trainer.launch` did not start is a world of one: every helper here is then
a no-op (or the plain computation), so the fit loop reads the same either way.
"""

import ctypes
import os
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

LAUNCHER_PID = "TUNERY_LAUNCHER_PID"  # set by trainer.launch for its ranks
# Set by trainer.launch on the machine whose supervisor reports the job (its leader): the
# ranks of several machines get their numbers from the rendezvous, in no order of ours.
REPORTING_NODE = "TUNERY_REPORTING_NODE"
# How long a rank waits for the others in a collective, e.g. while rank 0 validates.
PEER_TIMEOUT = timedelta(hours=1)
T = TypeVar("T")


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0  # this machine's GPU for the rank, on CUDA
    local_size: int = 1  # ranks on this machine
    reports: bool = True  # the rank that reports, validates and writes: the leader's first
    main_rank: int = 0  # its global rank, learnt when the ranks join

    @property
    def main(self) -> bool:
        return self.reports

    @classmethod
    def from_env(cls) -> "World":
        if LAUNCHER_PID not in os.environ:
            return cls()
        rank, size, local_rank, local_size = (
            int(os.environ[name])
            for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")
        )
        reports = os.environ.get(REPORTING_NODE) == "1" and local_rank == 0
        return cls(rank, size, local_rank, local_size, reports)


WORLD = World.from_env()


def join(device: torch.device) -> torch.device:
    """Join the other ranks (when launched as one) and return this rank's device: on CUDA,
    the GPU of its local rank."""
    global WORLD
    if LAUNCHER_PID not in os.environ:
        return device
    if device.type == "cuda":
        device = torch.device("cuda", WORLD.local_rank)
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(
        backend,
        timeout=PEER_TIMEOUT,
        device_id=device if device.type == "cuda" else None,
    )
    # Which rank reports: the one rank that says so (several machines' ranks are numbered
    # by the rendezvous, so it need not be rank 0).
    candidates = torch.tensor([WORLD.rank if WORLD.reports else WORLD.size], device=device)
    dist.all_reduce(candidates, op=dist.ReduceOp.MIN)
    WORLD = replace(WORLD, main_rank=int(candidates))
    if WORLD.main_rank == WORLD.size:
        raise RuntimeError("no rank of this job reports: none runs on its leader")
    return device


def leave() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


# What gloo and NCCL say when the process at the other end of a connection is gone.
_PEER_GONE = ("Connection closed by peer", "Connection reset by peer", "Broken pipe",
              "remote process exited")  # fmt: skip


def lost_a_peer(error: Exception) -> bool:
    """Whether a collective failed because another rank is gone (its machine, its process),
    rather than for a reason of this job's own (which would fail again: no retry)."""
    if WORLD.size == 1:
        return False
    return isinstance(error, dist.DistNetworkError) or (
        isinstance(error, RuntimeError) and any(gone in str(error) for gone in _PEER_GONE)
    )


def on_one_machine() -> bool:
    return WORLD.size == WORLD.local_size


def die_with_launcher() -> None:
    """torchrun starts each rank in a session of its own: a launcher killed with SIGKILL
    (the supervisor's last resort, a machine's worker killed) must not leave ranks behind, be
    they training or still starting (blocked opening the events FIFO that nobody reads)."""
    if LAUNCHER_PID not in os.environ:
        return
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != int(os.environ[LAUNCHER_PID]):  # it died before the prctl
        os._exit(1)


@dataclass(frozen=True)
class Share:
    """A batch that is already this rank's share of the global batch (a streamed dataset's,
    whose ranks read shards of their own: `trainer.streaming`), and the weight of its mean
    loss, as `shard` gives them."""

    tensors: tuple[torch.Tensor, ...]
    weight: float


def shard(batch: Sequence[torch.Tensor] | Share) -> tuple[tuple[torch.Tensor, ...], float]:
    """This rank's share of a global batch (a tuple of tensors, examples along dimension 0):
    contiguous, the shares' sizes differing by one at most, and the weight of its mean loss,
    so that the average over ranks of `weight * loss` is the global batch's mean loss.

    Every rank must take part in every step: with fewer examples than ranks, a rank left
    without one computes on a stand-in example with weight 0. A `Share` is taken as it is."""
    if isinstance(batch, Share):
        return batch.tensors, batch.weight
    if WORLD.size == 1:
        return tuple(batch), 1.0
    total = len(batch[0])
    share = tuple(t.tensor_split(WORLD.size)[WORLD.rank] for t in batch)
    if len(share[0]) == 0:
        return tuple(t[:1] for t in batch), 0.0
    return share, len(share[0]) * WORLD.size / total


class _BatchLoss(nn.Module):
    """DistributedDataParallel averages the gradients of what its module's forward computes:
    here a method's whole batch loss, whichever of `model`'s submodules it calls."""

    def __init__(self, model: nn.Module, batch_loss: Callable[[Any, float], torch.Tensor]):
        super().__init__()
        self.model = model
        self.batch_loss = batch_loss

    def forward(self, batch: Any, progress: float) -> torch.Tensor:
        return self.batch_loss(batch, progress)


def data_parallel(
    model: nn.Module, batch_loss: Callable[[Any, float], torch.Tensor], device: torch.device
) -> Callable[[Any, float], torch.Tensor]:
    """`batch_loss` with its gradients averaged over the ranks (itself, alone). Rank 0's
    weights and buffers are sent to the others first."""
    if WORLD.size == 1:
        return batch_loss
    device_ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(_BatchLoss(model, batch_loss), device_ids=device_ids)


def step_outcome(weighted_loss: torch.Tensor, stop: bool, finish: bool) -> tuple[float, bool, bool]:
    """The global batch's mean loss, from every rank's weighted share, and whether any rank
    was asked to stop, or to finish: one all-reduce, so that all ranks end after the same
    step."""
    if WORLD.size == 1:
        return weighted_loss.item(), stop, finish
    loss = weighted_loss.detach().float()
    all_three = torch.stack([loss, loss.new_tensor(float(stop)), loss.new_tensor(float(finish))])
    dist.all_reduce(all_three)
    loss_sum, stops, finishes = all_three.tolist()
    return loss_sum / WORLD.size, stops > 0, finishes > 0


def on_main(compute: Callable[[], T]) -> T:
    """`compute()` on rank 0 only (e.g. validation), its result on every rank."""
    if WORLD.size == 1:
        return compute()
    box = [compute() if WORLD.main else None]
    dist.broadcast_object_list(box, src=WORLD.main_rank)
    return box[0]


def seed_ranks(seed: int) -> None:
    """Give each rank its own stream of the global RNG (dropout), rank 0 keeping the one a
    single process would have: identical streams would drop the same units of every shard."""
    if WORLD.rank > 0:
        torch.manual_seed(seed + (WORLD.rank << 32))


def rng_states() -> torch.Tensor:
    """The global RNG state of this process, or of every rank (one row each), for a
    checkpoint."""
    state = torch.get_rng_state()
    if WORLD.size == 1:
        return state
    states: list[torch.Tensor | None] = [None] * WORLD.size
    dist.all_gather_object(states, state)
    return torch.stack(states)


def set_rng_states(states: torch.Tensor) -> None:
    if WORLD.size == 1:
        torch.set_rng_state(states if states.dim() == 1 else states[0].clone())
    elif states.dim() == 2 and len(states) == WORLD.size:
        # A copy: torch 2.13 reads a row's state from the start of its storage, and crashes.
        torch.set_rng_state(states[WORLD.rank].clone())
    # else saved by a world of another size (an elastic group re-formed with fewer machines):
    # each rank keeps the stream it was seeded with.


def barrier() -> None:
    if WORLD.size > 1:
        dist.barrier()
