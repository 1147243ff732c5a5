"""A Dagster resource that runs the `dvc` CLI in the project, the way dagster-dbt runs `dbt`."""

import json
import os
import shutil
import subprocess
import sys
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


class DvcCommandError(RuntimeError):
    """A dvc command failed; the message carries its output tail."""


class DvcCliResource(dg.ConfigurableResource):
    """Runs DVC commands in `project_dir` (the repo root). Operational settings only, never experiment
    knobs."""

    project_dir: str

    def stream(self, *args: str) -> Iterator[str]:
        """Run `dvc <args>`, yielding each output line as it comes; raise DvcCommandError on failure."""
        cmd = [dvc_executable(), *args]
        proc = subprocess.Popen(
            cmd,
            cwd=self.project_dir,
            env=dvc_subprocess_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
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
        if code != 0:
            raise DvcCommandError(
                f"`{' '.join(['dvc', *args])}` failed with exit code {code}:\n" + "\n".join(tail)
            )

    def run(self, *args: str, log: Callable[[str], None] | None = None) -> str:
        """Run `dvc <args>`, streaming each output line to `log`; raise DvcCommandError on failure."""
        cmd = [dvc_executable(), *args]
        proc = subprocess.Popen(
            cmd,
            cwd=self.project_dir,
            env=dvc_subprocess_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        lines = []
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if log:
                log(line.rstrip("\n"))
        code = proc.wait()
        output = "\n".join(lines)
        if code != 0:
            tail = "\n".join(lines[-40:])
            raise DvcCommandError(f"`{' '.join(['dvc', *args])}` failed with exit code {code}:\n{tail}")
        return output

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
