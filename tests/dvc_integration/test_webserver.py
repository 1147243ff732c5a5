"""The real Dagster webserver over a repo with several recipes (one broken): a GraphQL launch (what the
UI's Materialize button sends) of a prefixed asset runs its recipe's stage, the broken recipe's error
sensor fails its ticks with DVC's message, and a headless-Chromium screenshot of the asset graph shows
every recipe's assets."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from helpers import ARTIFACTS, CHROMIUM_ARGS, REPO_ROOT, _env, executed, system_chromium

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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
    port = _free_port()
    home = tmp_path / "dagster_home"
    home.mkdir()
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


def launch_and_wait(port: int, location: str, asset: list[str], timeout: float = 900) -> dict:
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
    result = graphql(port, LAUNCH, {"executionParams": params})["launchPipelineExecution"]
    assert result["__typename"] == "LaunchRunSuccess", result
    run_id = result["run"]["runId"]
    deadline = time.time() + timeout
    while time.time() < deadline:
        run = graphql(port, RUN_STATUS, {"id": run_id})["runOrError"]
        if run["status"] in ("SUCCESS", "FAILURE", "CANCELED"):
            return run
        time.sleep(0.5)
    raise AssertionError(f"run {run_id} did not finish in {timeout}s")


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
    again = launch_and_wait(port, location, ["default", "corpus"])
    assert again["status"] == "SUCCESS"
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
