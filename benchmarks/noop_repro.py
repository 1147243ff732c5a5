"""No-op rebuild cost: bare `dvc repro` vs the same stages through Dagster, in the same run.

    python benchmarks/noop_repro.py [--project .] [--recipe default] [--repeats 3] [--no-ui]

Builds the recipe first if anything is stale (not timed), then times, with everything up to date:
- `dvc repro <recipe's dvc.yaml>` (bare DVC, all of the recipe's stages);
- materializing all of the recipe's assets through Dagster in this process (`dg.materialize`);
- materializing one up-to-date asset (the recipe's last stage) the same way;
- loading the Dagster definitions (reading DVC's index and hashing deps for code versions);
- the UI's Materialize end to end: `dagster dev` (webserver + daemon, a fresh DAGSTER_HOME holding
  the repo's `dagster.yaml` if it has one) is started once, then the GraphQL mutation the
  Materialize button sends is timed until the run reports SUCCESS.
Prints JSON with medians and ratios against bare DVC.
"""

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import dagster as dg

from dagster_project.dvc_integration import DvcCliResource, build_code_location
from dagster_project.dvc_integration.resource import dvc_executable, dvc_subprocess_env

LAUNCH = """
mutation Launch($executionParams: ExecutionParams!) {
  launchPipelineExecution(executionParams: $executionParams) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
  }
}
"""
RUN_STATUS = "query Run($id: ID!) { runOrError(runId: $id) { __typename ... on Run { status } } }"
LOCATIONS = """
query { workspaceOrError { __typename ... on Workspace { locationEntries { name loadStatus } } } }
"""


def timed(fn, repeats: int) -> float:
    """Median wall time of `repeats` calls of `fn`."""
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def graphql(port: int, query: str, variables: dict | None = None) -> dict:
    """POST one GraphQL query to the webserver; its `data`."""
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=120) as resp:
        data = json.loads(resp.read())
    if "errors" in data:
        raise RuntimeError(data["errors"])
    return data["data"]


def ui_materialize(root: Path, asset: list[str], repeats: int) -> dict:
    """Start `dagster dev` on `root` and time the UI's Materialize of `asset` (GraphQL launch until the
    run succeeds), `repeats` times."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    home = Path(tempfile.mkdtemp(prefix="dagster_home_"))
    if (root / "dagster.yaml").exists():
        shutil.copy(root / "dagster.yaml", home / "dagster.yaml")
    env = dvc_subprocess_env() | {
        "DAGSTER_HOME": str(home),
        "DISTILL_PROJECT_DIR": str(root),
        "DAGSTER_DISABLE_TELEMETRY": "yes",
    }
    log = open(home / "dagster_dev.log", "w")
    dagster = str(Path(sys.executable).parent / "dagster")
    start = time.perf_counter()
    proc = subprocess.Popen(
        [dagster, "dev", "-m", "dagster_project.definitions", "-h", "127.0.0.1", "-p", str(port)],
        cwd=root,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        while True:
            try:
                entries = graphql(port, LOCATIONS)["workspaceOrError"]["locationEntries"]
                if entries and all(e["loadStatus"] == "LOADED" for e in entries):
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.perf_counter() - start > 600:
                raise RuntimeError("dagster dev did not start:\n" + (home / "dagster_dev.log").read_text())
            time.sleep(0.2)
        startup = time.perf_counter() - start
        location = entries[0]["name"]
        params = {
            "selector": {
                "repositoryLocationName": location,
                "repositoryName": "__repository__",
                "pipelineName": "__ASSET_JOB",
                "assetSelection": [{"path": asset}],
                "assetCheckSelection": [],
            },
            "mode": "default",
            "executionMetadata": {"tags": []},
        }

        def launch() -> None:
            result = graphql(port, LAUNCH, {"executionParams": params})["launchPipelineExecution"]
            if result["__typename"] != "LaunchRunSuccess":
                raise RuntimeError(result)
            run_id = result["run"]["runId"]
            while True:
                status = graphql(port, RUN_STATUS, {"id": run_id})["runOrError"]["status"]
                if status == "SUCCESS":
                    return
                if status in ("FAILURE", "CANCELED"):
                    raise RuntimeError(f"run {run_id} ended {status}")
                time.sleep(0.05)

        samples = []
        for _ in range(repeats + 1):  # the first also loads the definitions in the launcher
            t0 = time.perf_counter()
            launch()
            samples.append(time.perf_counter() - t0)
        return {
            "ui_dagster_dev_startup_s": round(startup, 3),
            "ui_materialize_first_after_start_s": round(samples[0], 3),
            "ui_materialize_one_up_to_date_s": round(statistics.median(samples[1:]), 3),
            "ui_materialize_samples_s": [round(x, 3) for x in samples],
        }
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
        shutil.rmtree(home, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--project", default=".")
    parser.add_argument("--recipe", default="default", help="the recipe to time (default: the repo root's)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-ui", action="store_true", help="skip the `dagster dev` GraphQL timing")
    args = parser.parse_args()
    root = Path(args.project).resolve()
    defs = build_code_location(root)
    from dagster_project.dvc_integration.project import load_project

    recipe = load_project(root, validate_params=False, code_versions=False).recipe(args.recipe)

    def dvc_repro() -> None:
        subprocess.run(
            [dvc_executable(), "repro", recipe.dvc_yaml],
            cwd=root,
            env=dvc_subprocess_env(),
            check=True,
            capture_output=True,
        )

    dvc_repro()  # build whatever is stale; not timed
    bare = timed(dvc_repro, args.repeats)
    load = timed(lambda: build_code_location(root), args.repeats)
    graph = defs.resolve_asset_graph()
    keys = sorted(k for k in graph.get_all_asset_keys() if k.path[0] == recipe.name)
    last = keys[-1]
    for key in keys:  # the recipe's last stage: one no other asset of the recipe depends on
        if not any(key in graph.get(k).parent_keys for k in keys):
            last = key
    assets = list(defs.assets or [])
    resources = {"dvc": DvcCliResource(project_dir=str(root))}
    with tempfile.TemporaryDirectory() as home, dg.instance_for_test(temp_dir=home) as instance:
        everything = timed(
            lambda: dg.materialize(assets, selection=keys, instance=instance, resources=resources),
            args.repeats,
        )
        one = timed(
            lambda: dg.materialize(assets, selection=[last], instance=instance, resources=resources),
            args.repeats,
        )
    result = {
        "project": str(root),
        "recipe": recipe.name,
        "n_assets": len(keys),
        "one_asset": last.to_user_string(),
        "repeats": args.repeats,
        "cpu_count": os.cpu_count(),
        "bare_dvc_repro_noop_s": round(bare, 3),
        "dagster_materialize_all_noop_s": round(everything, 3),
        "dagster_materialize_one_up_to_date_s": round(one, 3),
        "dagster_definitions_load_s": round(load, 3),
        "ratio_dagster_all_vs_bare_dvc": round(everything / bare, 2),
        "ratio_dagster_one_vs_bare_dvc": round(one / bare, 2),
    }
    if not args.no_ui:
        result |= ui_materialize(root, list(last.path), args.repeats)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
