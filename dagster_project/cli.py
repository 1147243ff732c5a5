"""`distill`: the command line of the project.

distill check     validate params.yaml (and the files it names) before any work
distill demo      build the whole pipeline with `dvc repro` and print the eval report's path
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from dagster_project.dvc_integration.resource import dvc_executable, dvc_subprocess_env
from dagster_project.params_schema import ParamsError, load_params

REPORT = Path("assets/eval_report/report.md")
METRICS = Path("assets/eval_report/metrics.json")


def check(root: Path) -> None:
    """Validate params.yaml; exit 2 with a message naming the key or file and the fix."""
    try:
        load_params(root / "params.yaml")
    except ParamsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    print("params.yaml: ok")


def demo(root: Path) -> None:
    """Run the whole pipeline (only what is stale), then print the headline numbers and report path."""
    check(root)
    start = time.time()
    proc = subprocess.run([dvc_executable(), "repro"], cwd=root, env=dvc_subprocess_env())
    if proc.returncode != 0:
        raise SystemExit(proc.returncode)
    metrics = json.loads((root / METRICS).read_text())
    print(f"\npipeline done in {time.time() - start:.0f}s")
    for system in ("student", "baseline"):
        em, f1 = (metrics.get(system, {}).get(k, 0.0) for k in ("exact_match", "token_f1"))
        print(f"  {system:9s} exact match {em:.3f}  token F1 {f1:.3f}")
    print(f"eval report: {(root / REPORT).resolve()}")


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `distill` command."""
    parser = argparse.ArgumentParser(
        prog="distill", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("command", choices=["check", "demo"])
    parser.add_argument("--project", default=".", help="the recipe folder (holds dvc.yaml, params.yaml)")
    args = parser.parse_args(argv)
    root = Path(args.project).resolve()
    {"check": check, "demo": demo}[args.command](root)


if __name__ == "__main__":
    main()
