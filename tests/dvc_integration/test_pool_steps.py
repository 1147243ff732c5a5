"""Stages that name a pool run as steps of their own: a `foreach` of shards is one Dagster step per
shard, the multiprocess executor runs them side by side (at most `meta.dagster.concurrency` at once),
and a shard whose worker process is killed outright is retried alone, leaving no duplicate or missing
row in the merge and no orphan stage process behind."""

import json
import os
import signal
import threading
import time
from pathlib import Path

import dagster as dg
import psutil
import pytest
import yaml
from dagster._core.definitions.reconstruct import ReconstructableRepository
from helpers import commit_dvc_repo, dvc

from dagster_project.dvc_integration import load_project
from dagster_project.dvc_integration.assets import POOL_TAG, build_recipe_assets, step_groups
from dagster_project.dvc_integration.executors import parallel_run_config

SHARDS = 4
ROWS = 40

SHARD_PY = """
import json, os, pathlib, sys, time, yaml
index, count = int(sys.argv[1]), int(sys.argv[2])
sleep = yaml.safe_load(open("params.yaml"))["sleep"]
timing = pathlib.Path("timing"); timing.mkdir(exist_ok=True)
started = time.time()
(timing / f"start_{index}_{os.getpid()}").write_text(str(started))
time.sleep(sleep)
rows = pathlib.Path("data/rows.txt").read_text().splitlines()
out = pathlib.Path(f"assets/shard_{index}"); out.mkdir(parents=True, exist_ok=True)
(out / "rows.txt").write_text("".join(r + "\\n" for i, r in enumerate(rows) if i % count == index))
(timing / f"span_{index}_{os.getpid()}.json").write_text(json.dumps([started, time.time()]))
"""

MERGE_PY = """
import pathlib, sys
rows = [line for d in sys.argv[1:] for line in pathlib.Path(d, "rows.txt").read_text().splitlines()]
pathlib.Path("assets/merged").mkdir(parents=True, exist_ok=True)
pathlib.Path("assets/merged/rows.txt").write_text("".join(r + "\\n" for r in rows))
"""

DEFINITIONS_PY = """
from pathlib import Path
from dagster_project.dvc_integration import build_code_location
defs = build_code_location(Path(__file__).resolve().parent)
"""


def _dvc_yaml(concurrency: int) -> dict:
    shard_dirs = [f"assets/shard_{i}" for i in range(SHARDS)]
    return {
        "stages": {
            "shard": {
                "foreach": list(range(SHARDS)),
                "do": {
                    "cmd": f"python shard.py ${{item}} {SHARDS}",
                    "deps": ["shard.py", "data/rows.txt"],
                    "params": ["sleep"],
                    "outs": ["assets/shard_${item}"],
                    "meta": {"dagster": {"pool": "teacher", "concurrency": concurrency}},
                },
            },
            "merge": {
                "cmd": "python merge.py " + " ".join(shard_dirs),
                "deps": ["merge.py", *shard_dirs],
                "outs": ["assets/merged"],
            },
        }
    }


@pytest.fixture
def sharded_repo(tmp_path: Path):
    def make(concurrency: int = SHARDS, sleep: float = 4.0) -> Path:
        root = tmp_path / "repo"
        (root / "data").mkdir(parents=True)
        (root / "shard.py").write_text(SHARD_PY)
        (root / "merge.py").write_text(MERGE_PY)
        (root / "definitions.py").write_text(DEFINITIONS_PY)
        (root / "data/rows.txt").write_text("".join(f"row-{i:03d}\n" for i in range(ROWS)))
        (root / "dvc.yaml").write_text(yaml.safe_dump(_dvc_yaml(concurrency), sort_keys=False))
        (root / "params.yaml").write_text(yaml.safe_dump({"sleep": sleep}))
        (root / ".gitignore").write_text("timing/\n__pycache__/\n")
        return commit_dvc_repo(root, "sharded recipe")

    return make


def _job(root: Path) -> dg.JobDefinition:
    repo = ReconstructableRepository.for_file(str(root / "definitions.py"), "defs", str(root))
    return repo.get_reconstructable_job("recipe__default")


def _spans(root: Path) -> dict[int, list[tuple[float, float]]]:
    spans: dict[int, list[tuple[float, float]]] = {}
    for f in sorted((root / "timing").glob("span_*.json")):
        spans.setdefault(int(f.name.split("_")[1]), []).append(tuple(json.loads(f.read_text())))
    return spans


def _most_at_once(spans: list[tuple[float, float]]) -> int:
    edges = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    now = most = 0
    for _, step in edges:
        now += step
        most = max(most, now)
    return most


def test_pool_stages_are_steps_of_their_own_and_the_rest_share_steps(sharded_repo):
    recipe = load_project(sharded_repo(concurrency=2)).recipe("default")
    own = {f"shard@{i}" for i in range(SHARDS)}
    assert step_groups(recipe.stages, own) == [([f"shard@{i}"], 1) for i in range(SHARDS)] + [(["merge"], 1)]
    assets = build_recipe_assets(recipe)
    names = sorted(a.op.name for a in assets)
    assert names == ["dvc__default__after_1", *(f"dvc__default__shard_{i}" for i in range(SHARDS))]
    shard = next(a for a in assets if a.op.name == "dvc__default__shard_0")
    assert shard.op.pool == "teacher" and shard.op.tags[POOL_TAG] == "teacher"
    config = parallel_run_config(recipe)["execution"]["config"]["multiprocess"]
    assert config["tag_concurrency_limits"] == [{"key": POOL_TAG, "value": "teacher", "limit": 2}]
    assert config["max_concurrent"] == max(2 + 1, os.cpu_count())  # the pool limit plus the merge step
    # No pool: one step, as before.
    assert step_groups(recipe.stages, set()) == [([*sorted(own), "merge"], 0)]


def test_shards_run_side_by_side_within_the_pool_limit(sharded_repo, instance):
    root = sharded_repo(concurrency=2, sleep=3.0)
    result = dg.execute_job(_job(root), instance=instance)
    assert result.success
    spans = [span for runs in _spans(root).values() for span in runs]
    assert len(spans) == SHARDS
    assert _most_at_once(spans) == 2  # side by side, never more than the pool's concurrency
    merged = (root / "assets/merged/rows.txt").read_text().splitlines()
    assert sorted(merged) == [f"row-{i:03d}" for i in range(ROWS)]
    dvc("status", cwd=root)
    assert "up to date" in dvc("status", cwd=root).stdout


def _kill_worker_of_shard(root: Path, index: int, killed: dict) -> None:
    """Wait until shard `index`'s stage command starts, then SIGKILL the Dagster step process that runs
    it (the parent of the dvc guard above the stage)."""
    deadline = time.time() + 120
    while time.time() < deadline:
        started = list((root / "timing").glob(f"start_{index}_*")) if (root / "timing").exists() else []
        if started:
            stage = psutil.Process(int(started[0].name.rsplit("_", 1)[1]))
            guard = next(p for p in stage.parents() if any("dvc_guard.py" in a for a in p.cmdline()))
            worker = guard.parent()
            killed.update(stage=stage.pid, guard=guard.pid, worker=worker.pid)
            os.kill(worker.pid, signal.SIGKILL)
            return
        time.sleep(0.1)


def test_a_shard_whose_worker_is_killed_is_retried_alone_without_duplicates(sharded_repo, instance):
    root = sharded_repo(concurrency=SHARDS, sleep=6.0)
    killed: dict = {}
    killer = threading.Thread(target=_kill_worker_of_shard, args=(root, 2, killed))
    killer.start()
    first = dg.execute_job(_job(root), instance=instance, raise_on_error=False)
    killer.join()
    assert not first.success and killed
    # All four shards ran at once: each started before any finished.
    starts = [float(f.read_text()) for f in (root / "timing").glob("start_*")]
    assert len(starts) == SHARDS
    assert max(starts) < min(end for runs in _spans(root).values() for _, end in runs)
    # The killed worker's stage command was stopped with it: no orphan writes the shard's outputs while
    # the retry runs it again.
    deadline = time.time() + 30
    while psutil.pid_exists(killed["stage"]) and time.time() < deadline:
        time.sleep(0.2)
    assert not psutil.pid_exists(killed["stage"]), "the stage command outlived its killed worker"
    done_first = {e.asset_key.path[-1] for e in first.get_asset_materialization_events()}
    assert done_first == {f"shard_{i}" for i in (0, 1, 3)}
    assert 2 not in _spans(root)  # shard 2 never finished

    retry = dg.execute_job(
        _job(root),
        instance=instance,
        reexecution_options=dg.ReexecutionOptions.from_failure(first.run_id, instance),
    )
    assert retry.success
    retried = {e.asset_key.path[-1] for e in retry.get_asset_materialization_events()}
    assert retried == {"shard_2", "merged"}  # the killed shard alone, then the merge
    assert {i: len(runs) for i, runs in _spans(root).items()} == {i: 1 for i in range(SHARDS)}
    merged = (root / "assets/merged/rows.txt").read_text().splitlines()
    assert len(merged) == len(set(merged)) == ROWS  # no duplicate, no missing row
    assert sorted(merged) == [f"row-{i:03d}" for i in range(ROWS)]
    assert "up to date" in dvc("status", cwd=root).stdout


def test_a_stage_with_resources_is_a_step_of_its_own_with_its_pod_size(sharded_repo, monkeypatch):
    root = sharded_repo()
    dvc_yaml = yaml.safe_load((root / "dvc.yaml").read_text())
    dvc_yaml["stages"]["shard"]["do"]["meta"] = {}  # no pool: the shards share a step again
    dvc_yaml["stages"]["merge"]["meta"] = {"dagster": {"resources": {"gpu": 1, "memory": "8Gi"}}}
    (root / "dvc.yaml").write_text(yaml.safe_dump(dvc_yaml, sort_keys=False))
    recipe = load_project(root).recipe("default")
    assets = {a.op.name: a for a in build_recipe_assets(recipe)}
    assert sorted(assets) == ["dvc__default", "dvc__default__merge"]
    pod = json.loads(assets["dvc__default__merge"].op.tags["dagster-k8s/config"])
    assert pod["container_config"]["resources"]["limits"] == {"memory": "8Gi", "nvidia.com/gpu": "1"}
    assert "dagster-k8s/config" not in assets["dvc__default"].op.tags

    from dagster_project.dvc_integration.location import project_executor

    assert project_executor(root, {}).name == "dvc_executor"
    with pytest.raises(ValueError, match="DISTILL_EXECUTOR='kube' is not an executor; allowed: in_process"):
        project_executor(root, {"DISTILL_EXECUTOR": "kube"})
