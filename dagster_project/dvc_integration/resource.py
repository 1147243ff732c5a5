"""A Dagster resource that runs the `dvc` CLI in the project, the way dagster-dbt runs `dbt`."""

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import dagster as dg


def dvc_subprocess_env() -> dict[str, str]:
    """The environment for dvc and the stage commands it runs: this interpreter's bin dir first on
    PATH, so `python -m ...` in dvc.yaml resolves to the environment Dagster runs in."""
    env = dict(os.environ)
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    return env


def dvc_executable() -> str:
    """The `dvc` beside this interpreter if there is one, else the one on PATH."""
    local = Path(sys.executable).parent / "dvc"
    return str(local) if local.exists() else (shutil.which("dvc") or "dvc")


def default_remote(project_dir: str | Path) -> str | None:
    """The repo's default DVC remote (`core.remote` of .dvc/config, overridden by .dvc/config.local),
    or None. Read from the files: spawning `dvc remote default` would cost a second."""
    from configobj import ConfigObj  # DVC's own config format and parser

    name = None
    for config in (".dvc/config", ".dvc/config.local"):
        path = Path(project_dir) / config
        if path.exists():
            name = ConfigObj(str(path)).get("core", {}).get("remote", name)
    return name or None


class DvcCommandError(RuntimeError):
    """A dvc command failed; the message carries its output tail."""


class DvcInterrupted(DvcCommandError):
    """A dvc command was stopped because its run was terminated (see `interrupt_runs_dvc`)."""


# The dvc process each run is waiting on, so that terminating a run that executes in this process
# (`InProcessRunLauncher`) can stop it, and the runs asked to stop (a process started after the
# request is stopped at once).
_running: dict[str, subprocess.Popen] = {}
_interrupted: set[str] = set()
_lock = threading.Lock()


def interrupt_runs_dvc(run_id: str) -> None:
    """Stop the dvc command of run `run_id` (now or as soon as it starts) the way Ctrl-C does: SIGINT to
    its process group, so DVC stops the stage command and leaves the workspace as after a Ctrl-C."""
    with _lock:
        _interrupted.add(run_id)
        proc = _running.get(run_id)
    if proc is not None and proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)


def forget_run(run_id: str) -> None:
    """Drop what `interrupt_runs_dvc` recorded for a run that has ended."""
    with _lock:
        _interrupted.discard(run_id)
        _running.pop(run_id, None)


class DvcCliResource(dg.ConfigurableResource):
    """Runs DVC commands in `project_dir` (the repo root). Operational settings only, never experiment
    knobs."""

    project_dir: str
    pull: bool = True
    """Materialize with `dvc repro --pull` when the repo has a default remote: missing outputs of an
    unchanged stage are pulled from it, and a changed stage is restored from its run cache when it has
    the run, before anything is recomputed (off: DISTILL_DVC_PULL=0 for the project's definitions)."""

    def stream(self, *args: str, run_id: str | None = None) -> Iterator[str]:
        """Run `dvc <args>`, yielding each output line as it comes; raise DvcCommandError on failure
        (DvcInterrupted when run `run_id` was terminated)."""
        # Through the guard: if this process dies (a killed step worker), DVC and its stage stop too.
        guard = [sys.executable, str(Path(__file__).with_name("dvc_guard.py")), str(os.getpid())]
        proc = subprocess.Popen(
            [*guard, dvc_executable(), *args],
            cwd=self.project_dir,
            env=dvc_subprocess_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # its own process group: an interrupt reaches the stage command too
        )
        if run_id is not None:
            with _lock:
                _running[run_id] = proc
                stop_now = run_id in _interrupted
            if stop_now:
                os.killpg(proc.pid, signal.SIGINT)
        tail: list[str] = []
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                line = line.rstrip("\n")
                tail = [*tail[-39:], line]
                yield line
        finally:
            if proc.poll() is None and proc.stdout is not None:
                proc.stdout.close()
            code = proc.wait()
            if run_id is not None:
                with _lock:
                    _running.pop(run_id, None)
        command = " ".join(["dvc", *args])
        if run_id is not None and run_id in _interrupted:
            raise DvcInterrupted(f"`{command}` was stopped: the run was terminated")
        if code != 0:
            raise DvcCommandError(f"`{command}` failed with exit code {code}:\n" + "\n".join(tail))

    def run(self, *args: str, log: Callable[[str], None] | None = None) -> str:
        """Run `dvc <args>`, streaming each output line to `log`; raise DvcCommandError on failure."""
        lines = []
        for line in self.stream(*args):
            lines.append(line)
            if log:
                log(line)
        return "\n".join(lines)

    def repro(self, address: str, log: Callable[[str], None] | None = None) -> str:
        """Reproduce one stage only (never its upstream), waiting for the repo lock if it is held;
        `address` is `<dvc.yaml path>:<stage>` relative to `project_dir`."""
        return self.run("--wait-for-lock", "repro", "--single-item", address, log=log)

    def status(self, *targets: str) -> dict[str, list]:
        """`dvc status --json [targets]`: the stages DVC considers changed, with what changed (a target:
        a recipe's dvc.yaml path, or a stage address)."""
        out = self.run("status", "--json", *targets)
        start = out.find("{")
        return json.loads(out[start:]) if start >= 0 else {}
