"""A real celery setup for tests: Debian's `redis-server` on a free 127.0.0.1 port as the broker and result
backend, and `dagster-celery worker start` processes that load the project's definitions with the
environment the test gives them (DISTILL_PROJECT_DIR, DISTILL_EXECUTOR=celery, the broker, DAGSTER_HOME).
Everything started here is stopped when the context exits."""

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
from helpers import free_port, system_binary

from dagster_project.dvc_integration.executors import celery_worker_config

BIN = Path(sys.executable).parent


def redis_server_binary() -> str:
    """Path of Debian's redis-server; skips the test locally without it, fails it in CI (CI set)."""
    return system_binary("redis-server", install="apt-get install redis-server")


def _redis_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _stop_group(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    """SIGTERM the process group `proc` leads (warm shutdown for celery), SIGKILL what is left."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            pass
        except ProcessLookupError:
            return
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # forked pool children left behind, if any
    except ProcessLookupError:
        pass
    proc.wait()


@contextmanager
def redis_server(folder: Path) -> Iterator[str]:
    """A fresh redis-server on a free 127.0.0.1 port, persisting nothing; yields its URL (db 0)."""
    binary = redis_server_binary()
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = open(folder / "redis.log", "w")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(folder)],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while not _redis_ping(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"redis-server did not start:\n{(folder / 'redis.log').read_text()}")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        _stop_group(proc)
        log.close()


@dataclass
class Worker:
    name: str
    proc: subprocess.Popen  # `dagster-celery worker start`, leader of its own process group
    log: Path

    def text(self) -> str:
        return self.log.read_text(errors="replace")


@contextmanager
def celery_workers(
    env: Mapping[str, str], folder: Path, count: int = 2, concurrency: int = 2
) -> Iterator[list[Worker]]:
    """`count` dagster-celery workers (prefork pools of `concurrency` processes each) started with `env`
    (it must name DAGSTER_HOME and the broker, see executors.py); yields them once every one says it
    is ready, and stops them at exit."""
    folder.mkdir(parents=True, exist_ok=True)
    # Create the instance's storage once first: two workers creating its sqlite tables at once race.
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]):
        pass
    config = celery_worker_config(folder / "celery.yaml", env)
    workers: list[Worker] = []
    with ExitStack() as stack:
        for i in range(count):
            name = f"w{i}"
            log = folder / f"{name}.log"
            out = stack.enter_context(open(log, "w"))
            proc = subprocess.Popen(
                [str(BIN / "dagster-celery"), "worker", "start", "-A", "dagster_celery.app",
                 "-y", str(config), "-n", name, "--", f"--concurrency={concurrency}", "--pool=prefork",
                 "--without-gossip", "--without-mingle", "--without-heartbeat"],
                env=dict(env), stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
            workers.append(Worker(name, proc, log))
            stack.callback(_stop_group, proc)
        deadline = time.monotonic() + 90
        for worker in workers:
            while " ready." not in worker.text():
                if worker.proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"celery worker {worker.name} did not start:\n{worker.text()}")
                time.sleep(0.1)
        yield workers
