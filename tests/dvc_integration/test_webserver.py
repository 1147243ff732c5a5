"""The real Dagster webserver over a repo with several recipes (one broken): a GraphQL launch (what the
UI's Materialize button sends) of a prefixed asset runs its recipe's stage, the broken recipe's error
sensor fails its ticks with DVC's message, and a headless-Chromium screenshot of the asset graph shows
every recipe's assets."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from helpers import ARTIFACTS, CHROMIUM_ARGS, REPO_ROOT, _env, executed, free_port, set_param, system_chromium

from dagster_project.dvc_integration.launcher import IN_PROCESS_EVENT, SUBPROCESS_EVENT

pytestmark = pytest.mark.slow

ASSETS = ["corpus", "synthesized", "deduped", "student", "eval_report", "score", "shard_1"]
RECIPES = ["default", "alpha", "beta"]

LAUNCH = """
mutation Launch($executionParams: ExecutionParams!) {
  launchPipelineExecution(executionParams: $executionParams) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message stack }
    ... on InvalidSubsetError { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}
"""
TERMINATE = """
mutation Terminate($runId: String!) {
  terminateRun(runId: $runId) {
    __typename
    ... on TerminateRunFailure { message }
    ... on PythonError { message }
  }
}
"""
RUN_EVENTS = """
query Events($id: ID!) { logsForRun(runId: $id) { __typename ... on EventConnection { events {
  __typename ... on MessageEvent { message } } } } }
"""
RUN_STATUS = (
    "query Run($id: ID!) { runOrError(runId: $id) { __typename ... on Run { status startTime endTime } } }"
)
SENSORS = """
query Sensors($location: String!) {
  sensorsOrError(repositorySelector: {repositoryLocationName: $location, repositoryName: "__repository__"}) {
    __typename
    ... on Sensors { results { name sensorState { status
      ticks(limit: 1) { status error { message cause { message } } } } } }
  }
}
"""
LOCATIONS = """
query { workspaceOrError { __typename ... on Workspace { locationEntries { name loadStatus
  locationOrLoadError { __typename ... on PythonError { message } } } } } }
"""


def graphql(port: int, query: str, variables: dict | None = None) -> dict:
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=60) as resp:
        data = json.loads(resp.read())
    assert "errors" not in data, data
    return data["data"]


@pytest.fixture
def dagster_dev(broken_recipes_repo, tmp_path):
    """`dagster dev` (webserver + daemon) serving the recipes of a repo where two recipes are broken."""
    fixture_repo = broken_recipes_repo
    port = free_port()
    home = tmp_path / "dagster_home"
    home.mkdir()
    # The repo's instance settings, as `dagster dev` started in the repo uses them (in-process launcher).
    shutil.copy(REPO_ROOT / "dagster.yaml", home / "dagster.yaml")
    env = _env() | {"DAGSTER_HOME": str(home), "DISTILL_PROJECT_DIR": str(fixture_repo)}
    env["DAGSTER_DISABLE_TELEMETRY"] = "yes"
    log = open(tmp_path / "dagster_dev.log", "w")
    dagster = str(Path(sys.executable).parent / "dagster")
    proc = subprocess.Popen(
        [dagster, "dev", "-m", "dagster_project.definitions", "-h", "127.0.0.1", "-p", str(port)],
        cwd=fixture_repo,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 600
        while True:
            try:
                entries = graphql(port, LOCATIONS)["workspaceOrError"]["locationEntries"]
                if entries and all(e["loadStatus"] == "LOADED" for e in entries):
                    break
            except OSError:
                pass
            if time.time() > deadline or proc.poll() is not None:
                raise AssertionError(
                    "dagster dev did not start:\n" + (tmp_path / "dagster_dev.log").read_text()
                )
            time.sleep(1)
        error = entries[0]["locationOrLoadError"]
        assert error["__typename"] != "PythonError", error
        yield port, entries[0]["name"]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def launch(port: int, location: str, *assets: list[str]) -> str:
    """The UI's Materialize of the selected assets; returns the run id."""
    params = {
        "selector": {
            "repositoryLocationName": location,
            "repositoryName": "__repository__",
            "pipelineName": "__ASSET_JOB",
            "assetSelection": [{"path": asset} for asset in assets],
            "assetCheckSelection": [],
        },
        "mode": "default",
        "executionMetadata": {"tags": []},
    }
    result = graphql(port, LAUNCH, {"executionParams": params})["launchPipelineExecution"]
    assert result["__typename"] == "LaunchRunSuccess", result
    return result["run"]["runId"]


def wait_for_run(port: int, run_id: str, timeout: float = 900) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        run = graphql(port, RUN_STATUS, {"id": run_id})["runOrError"]
        if run["status"] in ("SUCCESS", "FAILURE", "CANCELED"):
            return run
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} did not finish in {timeout}s")


def launch_and_wait(port: int, location: str, asset: list[str], timeout: float = 900) -> dict:
    return wait_for_run(port, launch(port, location, asset), timeout)


def run_messages(port: int, run_id: str) -> list[str]:
    events = graphql(port, RUN_EVENTS, {"id": run_id})["logsForRun"]["events"]
    return [e.get("message") or "" for e in events]


def latest_sensor_ticks(port: int, location: str) -> dict[str, dict]:
    results = graphql(port, SENSORS, {"location": location})["sensorsOrError"]["results"]
    return {s["name"]: s["sensorState"] for s in results}


def test_graphql_materialize_updates_dvc_lock_and_ui_shows_all_assets(dagster_dev, broken_recipes_repo):
    port, location = dagster_dev
    root = broken_recipes_repo
    alpha = root / "examples/alpha"
    assert not (root / "dvc.lock").exists()

    # A prefixed asset of a recipe under examples/: its stage runs in its folder, its dvc.lock records it.
    run = launch_and_wait(port, location, ["alpha", "corpus"])
    assert run["status"] == "SUCCESS", run
    assert executed(alpha) == ["retrieve"] and executed(root) == []
    lock = yaml.safe_load((alpha / "dvc.lock").read_text())
    assert (
        list(lock["stages"]) == ["retrieve"]
        and lock["stages"]["retrieve"]["outs"][0]["path"] == "assets/corpus"
    )
    assert not (root / "dvc.lock").exists()

    # The root recipe's asset of the same name is another asset, and another dvc.lock.
    run = launch_and_wait(port, location, ["default", "corpus"])
    assert run["status"] == "SUCCESS", run
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    assert "retrieve" in lock["stages"] and lock["stages"]["retrieve"]["outs"][0]["path"] == "assets/corpus"

    # Materializing an up-to-date asset: DVC skips, Dagster still records it. Timed for the notes.
    start = time.time()
    run_id = launch(port, location, ["default", "corpus"])
    again = wait_for_run(port, run_id)
    assert again["status"] == "SUCCESS"
    # The repo's dagster.yaml launcher ran it in a thread of the webserver, not in a new process.
    assert any(IN_PROCESS_EVENT in m for m in run_messages(port, run_id)), run_messages(port, run_id)
    print(
        json.dumps(
            {
                "ui_materialize_up_to_date_s": round(time.time() - start, 2),
                "run_duration_s": round(again["endTime"] - again["startTime"], 2),
            }
        )
    )

    # The broken recipes are there by name: running sensors whose ticks fail with the error.
    deadline = time.time() + 300
    while True:
        states = latest_sensor_ticks(port, location)
        ticks = {name: (states[name]["ticks"] or [None])[0] for name in states}
        broken = ticks.get("recipe_error__broken")
        if (broken and broken["status"] == "FAILURE") or time.time() > deadline:
            break
        time.sleep(2)
    assert {"dvc_lock_sensor", "recipe_error__broken", "recipe_error__badparams"} <= set(states)
    assert states["recipe_error__broken"]["status"] == "RUNNING"
    assert broken and broken["status"] == "FAILURE", ticks
    error = broken["error"]["message"] + ((broken["error"].get("cause") or {}).get("message") or "")
    assert "recipe 'broken'" in error and "examples/broken/dvc.yaml" in error, error

    screenshot_asset_graph(port)


def test_terminating_a_run_stops_its_dvc_stage_and_cancels_it(dagster_dev, broken_recipes_repo):
    """The UI's Terminate of a run executing in the webserver's thread: DVC and the stage command get
    Ctrl-C, the run ends CANCELED, the repo lock is released and nothing half-written is recorded."""
    port, location = dagster_dev
    root = broken_recipes_repo
    set_param(root, "retrieve", "sleep", 300)
    start = time.time()
    run_id = launch(port, location, ["default", "corpus"])
    while "retrieve" not in (root / "runs.log").read_text() if (root / "runs.log").exists() else True:
        assert time.time() - start < 120, "the stage did not start"
        time.sleep(0.2)
    result = graphql(port, TERMINATE, {"runId": run_id})["terminateRun"]
    assert result["__typename"] == "TerminateRunSuccess", result
    run = wait_for_run(port, run_id, timeout=120)
    assert run["status"] == "CANCELED", run
    assert time.time() - start < 120  # not the stage's 300 s
    assert not _stage_processes("steps.py retrieve"), "the stage command outlived its run"
    assert not (root / "dvc.lock").exists() and not (root / "assets/corpus").exists()
    # The lock is free and the stage runs to the end once it is quick again.
    set_param(root, "retrieve", "sleep", 0)
    assert launch_and_wait(port, location, ["default", "corpus"])["status"] == "SUCCESS"
    assert (root / "assets/corpus/chunks.txt").exists()


def test_a_graphql_subset_run_executes_exactly_the_selected_stages(dagster_dev, broken_recipes_repo):
    """Two of the root recipe's five assets selected in the UI: one run, exactly their two stages."""
    port, location = dagster_dev
    root = broken_recipes_repo
    names = ["corpus", "synthesized", "deduped", "student", "eval_report"]
    run = wait_for_run(port, launch(port, location, *(["default", n] for n in names)))
    assert run["status"] == "SUCCESS", run
    assert executed(root) == ["retrieve", "synthesize", "dedup", "train", "evaluate"]
    set_param(root, "synthesize", "suffix", "?")
    set_param(root, "train", "lr", 0.2)
    run = wait_for_run(port, launch(port, location, ["default", "student"], ["default", "synthesized"]))
    assert run["status"] == "SUCCESS", run
    assert executed(root) == ["synthesize", "train"]  # in dependency order; dedup/evaluate not run
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    assert lock["stages"]["train"]["params"]["params.yaml"]["train"]["lr"] == 0.2


def test_a_recipe_job_with_pool_stages_runs_them_side_by_side_in_a_process_of_its_own(
    dagster_dev, broken_recipes_repo
):
    """The recipe job of a recipe with pool stages (beta's two shards) defaults to the multiprocess
    executor: the launcher hands the run to a process of its own, whose steps run the shards."""
    port, location = dagster_dev
    root = broken_recipes_repo
    params = {
        "selector": {"repositoryLocationName": location, "repositoryName": "__repository__",
                     "pipelineName": "recipe__beta"},
        "mode": "default",
        "executionMetadata": {"tags": []},
    }  # fmt: skip
    result = graphql(port, LAUNCH, {"executionParams": params})["launchPipelineExecution"]
    assert result["__typename"] == "LaunchRunSuccess", result
    run_id = result["run"]["runId"]
    run = wait_for_run(port, run_id)
    messages = run_messages(port, run_id)
    assert run["status"] == "SUCCESS", messages
    assert any(SUBPROCESS_EVENT in m for m in messages), messages
    assert not any(IN_PROCESS_EVENT in m for m in messages)
    assert any("multiprocess executor" in m for m in messages), messages
    assert (root / "examples/beta/assets/shard_2/s.txt").read_text() == "BETA TEXT\n" * 2


def _stage_processes(needle: str) -> list[int]:
    """Pids of live processes whose command line contains `needle` (Linux /proc)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError):
            continue
        if needle in cmdline:
            pids.append(int(proc.name))
    return pids


def screenshot_asset_graph(port: int) -> None:
    from playwright.sync_api import sync_playwright

    chromium = system_chromium()
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.goto(f"http://127.0.0.1:{port}/asset-groups", wait_until="networkidle")
        dismiss_community_popup(page)
        # With several groups the graph starts collapsed: its background menu expands them all.
        page.locator("[data-testid='asset-graph'], svg").first.wait_for(timeout=60_000)
        page.mouse.click(1100, 900, button="right")
        page.get_by_role("menuitem", name="Expand all groups").click()
        for name in ASSETS:
            page.get_by_text(name, exact=True).first.wait_for(timeout=60_000)
        page.screenshot(path=str(ARTIFACTS / "asset_graph.png"))
        text = page.inner_text("body")
        browser.close()
    for name in ASSETS + RECIPES:
        assert name in text


def dismiss_community_popup(page) -> None:
    """The UI greets a new instance with a 'Join the Dagster community' dialog over the graph."""
    try:
        page.get_by_role("button", name="Skip").click(timeout=15_000)
    except Exception:  # shown once per instance; absent is fine
        page.keyboard.press("Escape")


def test_dagster_loads_from_repo_root_with_no_flags():
    """`dagster dev` in the repo needs no -m/-f: pyproject.toml's [tool.dagster] names the module."""
    dagster = str(Path(sys.executable).parent / "dagster")
    proc = subprocess.run(
        [dagster, "definitions", "validate"],
        cwd=REPO_ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
