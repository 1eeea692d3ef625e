"""A worker of a sized GPU queue (`TUNERY_GPU_QUEUES`) sees that many GPUs or does not start:
the jobs routed to that queue count on a GPU for each of their processes."""

import os
import subprocess
import sys
from collections.abc import Iterable

# Asked of a child interpreter: CUDA initialised in the worker's main process would not survive
# the fork of its pool processes, whose trainers use it.
COUNT_GPUS = "import torch; print(torch.cuda.device_count())"


def visible_gpus() -> int:
    """The GPUs this worker's trainers will see: `torch.cuda.device_count()`, which honours
    CUDA_VISIBLE_DEVICES."""
    done = subprocess.run(
        [sys.executable, "-c", COUNT_GPUS], capture_output=True, text=True, check=True
    )
    return int(done.stdout)


def too_few_gpus(consumed: Iterable[str], gpu_queues: dict[int, str]) -> str | None:
    """Why a worker consuming these queues cannot run the jobs routed to them; None when it
    can (or consumes no sized queue, whose GPUs are not counted)."""
    sizes = {queue: size for size, queue in gpu_queues.items()}
    sized = [queue for queue in consumed if queue in sizes]
    if not sized:
        return None
    queue = max(sized, key=sizes.__getitem__)
    seen = visible_gpus()
    if seen >= sizes[queue]:
        return None
    where = os.environ.get("CUDA_VISIBLE_DEVICES")
    return (
        f"it consumes {queue!r}, the queue of {sizes[queue]}-GPU workers (TUNERY_GPU_QUEUES), "
        f"and sees {seen} GPUs"
        + (f" (CUDA_VISIBLE_DEVICES={where})" if where is not None else "")
        + ": give it more GPUs, or have it consume the queue of its size"
    )
