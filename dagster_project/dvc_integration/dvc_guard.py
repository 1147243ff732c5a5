"""Run a command so that it stops when the process that started it dies, even by SIGKILL.

    python dvc_guard.py <watched pid> <command> [args...]

The guard leads the process group it and the command run in (its starter gives it a session of its
own). A Dagster step that waits on `dvc repro` can be killed outright (an executor's worker killed,
a pod evicted); without the guard DVC and the stage command it runs would go on writing the step's
outputs while the retried step starts them again. When the watched process is gone, the guard sends
SIGINT to the group, the way Ctrl-C stops DVC (it stops the stage command and releases its locks),
and SIGKILL if that has not ended it within a grace period. SIGINT sent to the group by the starter
(a terminated run) reaches the command the same way; the guard itself ignores it. Exits with the
command's exit code.

A plain script (run by path, importing nothing of the project) so that it starts in milliseconds.
"""

import os
import signal
import subprocess
import sys
import time

POLL_S = 0.2
GRACE_S = 30.0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def main(argv: list[str]) -> int:
    watched, command = int(argv[0]), argv[1:]
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the group's Ctrl-C is for the command
    proc = subprocess.Popen(command, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    while proc.poll() is None:
        if os.getppid() != watched or not _alive(watched):
            os.killpg(0, signal.SIGINT)
            try:
                return proc.wait(GRACE_S)
            except subprocess.TimeoutExpired:
                os.killpg(0, signal.SIGKILL)
                return proc.wait()
        time.sleep(POLL_S)
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
