"""A warm interpreter that forks trainers: `python -m worker.zygote SOCKET_FD`.

It imports what every trainer imports, then serves its supervisor over a SOCK_SEQPACKET
socket, one trainer at a time: a request is the trainer's arguments with two descriptors (its
events channel and its log); the answers are the child's pid, then its exit status (Popen's
`returncode`). It ends when the socket closes, and dies with its supervisor (PDEATHSIG).
"""

import json
import os
import signal
import socket
import sys
import traceback

# What every trainer imports; torch._dynamo is otherwise imported at the optimiser's first
# step, scikit-learn's datasets when a built-in dataset is loaded.
import sklearn.datasets
import sklearn.model_selection  # noqa: F401
import torch._dynamo  # noqa: F401
from setproctitle import setproctitle

from trainer import main as trainer_main
from worker.trainer_process import die_with_parent, trainer_title

MAX_REQUEST_BYTES = 64 * 1024


def serve(channel: socket.socket) -> None:
    # It ends with its supervisor (PDEATHSIG) or its socket, not with a signal meant for the
    # pool's process group: its trainer, in a session of its own, is stopped by its supervisor.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while True:
        request, fds, _, _ = socket.recv_fds(channel, MAX_REQUEST_BYTES, 2)
        if not request:
            return
        events_fd, log_fd = fds
        argv = json.loads(request)["argv"]
        ready_r, ready_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            channel.close()
            os.close(ready_r)
            os._exit(_become_trainer(argv, events_fd, log_fd, ready_w))
        for fd in (events_fd, log_fd, ready_w):
            os.close(fd)
        # The pid once the child leads its own session and is titled: a supervisor that
        # stops it at once reaches it by process group, and a stopping worker finds it.
        os.read(ready_r, 1)
        os.close(ready_r)
        channel.send(json.dumps({"pid": pid}).encode())
        _, status = os.waitpid(pid, 0)
        channel.send(json.dumps({"returncode": os.waitstatus_to_exitcode(status)}).encode())


def _become_trainer(argv: list[str], events_fd: int, log_fd: int, ready_fd: int) -> int:
    """In the forked child: what `python -m trainer.main ARGV` would be."""
    zygote = os.getppid()
    os.setsid()  # a process group of its own, as the supervisor stops it by group
    die_with_parent()
    if os.getppid() != zygote:  # it died before PDEATHSIG was set
        return 1
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    setproctitle(trainer_title(argv))
    os.close(ready_fd)  # the zygote may report the pid
    argv = [*argv, "--events-fd", str(events_fd)]
    try:
        code = trainer_main.main(argv)
    except SystemExit as exit_:  # as the interpreter maps it
        if exit_.code is None or isinstance(exit_.code, int):
            code = exit_.code or 0
        else:
            print(exit_.code, file=sys.stderr)
            code = 1
    except BaseException:  # the exit status says so; the log says what
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    return code


if __name__ == "__main__":
    serve(socket.socket(fileno=int(sys.argv[1])))
