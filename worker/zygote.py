"""A warm interpreter that forks trainers: `python -m worker.zygote SOCKET_FD`.

It imports what every trainer imports, then serves its supervisor over a SOCK_SEQPACKET
socket, one trainer at a time: a request is the trainer's arguments with two descriptors (its
events channel and its log); the answers are the child's pid, then its exit status (Popen's
`returncode`). It ends when the socket closes, and dies with its supervisor (PDEATHSIG).
"""

import json
import os
import socket
import sys
import traceback

# What every trainer imports; torch._dynamo is otherwise imported at the optimiser's first
# step, scikit-learn's datasets when a built-in dataset is loaded.
import sklearn.datasets
import sklearn.model_selection  # noqa: F401
import torch._dynamo  # noqa: F401
from setproctitle import setproctitle

from worker.core import trainer
from worker.trainer_process import die_with_parent, trainer_title

MAX_REQUEST_BYTES = 64 * 1024


def serve(channel: socket.socket) -> None:
    while True:
        request, fds, _, _ = socket.recv_fds(channel, MAX_REQUEST_BYTES, 2)
        if not request:
            return
        events_fd, log_fd = fds
        argv = json.loads(request)["argv"]
        pid = os.fork()
        if pid == 0:
            channel.close()
            os._exit(_become_trainer(argv, events_fd, log_fd))
        os.close(events_fd)
        os.close(log_fd)
        channel.send(json.dumps({"pid": pid}).encode())
        _, status = os.waitpid(pid, 0)
        channel.send(json.dumps({"returncode": os.waitstatus_to_exitcode(status)}).encode())


def _become_trainer(argv: list[str], events_fd: int, log_fd: int) -> int:
    """In the forked child: what `python -m worker.core.trainer ARGV` would be."""
    os.setsid()  # a process group of its own, as the supervisor stops it by group
    die_with_parent()
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    setproctitle(trainer_title(argv))
    argv = [*argv, "--events-fd", str(events_fd)]
    try:
        code = trainer.main(argv)
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    except BaseException:  # the exit status says so; the log says what
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    return code


if __name__ == "__main__":
    serve(socket.socket(fileno=int(sys.argv[1])))
