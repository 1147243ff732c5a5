"""A recipe whose synthesize stage is sharded 4 ways (`foreach`, `meta.dagster.pool: teacher`) and merged
by dedup, materialized through the project's definitions under the celery executor: a real redis-server
broker on 127.0.0.1 and two dagster-celery workers (celery_fixture.py). The shards run on the workers
at once, and the outputs equal an in-process run's; a worker killed with SIGKILL mid-shard fails the
run, and re-executing it from failure completes with every row once."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import polars as pl
import psutil
import pytest
import yaml
from celery_fixture import celery_workers, redis_server, redis_server_binary
from helpers import REPO_ROOT, commit_dvc_repo, synthesize_recipe_params

from dagster_project.dvc_integration.executors import BROKER_ENV
from dagster_project.dvc_integration.location import EXECUTOR_ENV

SHARDS = 4

# A test hook in front of each shard's command: while `$SHARD_GATE/<i>` exists the shard holds (after
# writing its pid to `<i>.held`), so a test can see shards running at once or kill one mid-step.
GATE_PY = """
import os, pathlib, sys, time

gate = os.environ.get("SHARD_GATE")
if gate:
    hold = pathlib.Path(gate) / sys.argv[1]
    if hold.exists():
        (hold.parent / (sys.argv[1] + ".held")).write_text(str(os.getpid()))
        while hold.exists():
            time.sleep(0.05)
"""

SHARD_DIRS = " ".join(f"assets/shard_{i}" for i in range(SHARDS))
DVC_YAML = {
    "stages": {
        "synthesize": {
            "foreach": list(range(SHARDS)),
            "do": {
                "cmd": "python gate.py ${item} && python -m dagster_project.stages.synthesize"
                " --params params.yaml --input data/grounding.parquet --out assets/shard_${item}"
                f" --shard ${{item}}/{SHARDS}",
                "deps": ["data/grounding.parquet"],
                "params": ["synthesize"],
                "outs": ["assets/shard_${item}"],
                "meta": {"dagster": {"pool": "teacher", "concurrency": SHARDS}},
            },
        },
        "dedup": {
            "cmd": f"python -m dagster_project.stages.dedup --params params.yaml --synthesized {SHARD_DIRS}"
            " --gold data/gold.jsonl --out assets/deduped",
            "deps": [*SHARD_DIRS.split(), "data/gold.jsonl"],
            "params": ["dedup"],
            "outs": ["assets/deduped"],
        },
    }
}

# Runs a job of the project's definitions (`-m dagster_project.definitions`, as the workers load them)
# with the executor the environment names and the run config given; with a parent run id, re-executes
# that run from failure.
DRIVER = """
import json, sys
import dagster as dg
from dagster._core.definitions.reconstruct import ReconstructableRepository

job, parent, run_config = sys.argv[1], sys.argv[2] or None, json.loads(sys.argv[3])
repository = ReconstructableRepository.for_module("dagster_project.definitions", "defs")
recon = repository.get_reconstructable_job(job)
with dg.DagsterInstance.get() as instance:
    options = dg.ReexecutionOptions.from_failure(parent, instance) if parent else None
    result = dg.execute_job(recon, instance, run_config=run_config or None, reexecution_options=options)
    print(json.dumps({"run_id": result.run_id, "success": result.success}))
"""
JOB = "recipe__default"


def make_sharded_repo(root: Path) -> Path:
    """A committed git+DVC repo at `root`: the sharded synthesize (offline teacher, 10 demo-world
    passages, 3 pairs each) and dedup."""
    root.mkdir(parents=True)
    synthesize_recipe_params(root, constants={"count": 3})
    params = yaml.safe_load((root / "params.yaml").read_text())
    params = {section: params[section] for section in ("synthesize", "dedup")}  # what the stages read
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (root / "data").mkdir()
    lines = (REPO_ROOT / "data/demo_world/passages.jsonl").read_text().splitlines()[:10]
    rows = [json.loads(line) for line in lines]
    pl.DataFrame({"passage_id": [r["id"] for r in rows], "text": [r["text"] for r in rows]}).write_parquet(
        root / "data/grounding.parquet"
    )
    (root / "data/gold.jsonl").write_text((REPO_ROOT / "data/demo_world/gold_test.jsonl").read_text())
    (root / "gate.py").write_text(GATE_PY)
    (root / "dvc.yaml").write_text(yaml.safe_dump(DVC_YAML, sort_keys=False))
    return commit_dvc_repo(root, "sharded recipe")


def project_env(root: Path, home: Path, executor: str, **extra: str) -> dict[str, str]:
    """The environment the driver and the workers share: the project, the Dagster instance, the
    executor, the offline teacher with a cache of this project's own, no remote."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {k: v for k, v in os.environ.items() if k not in ("DISTILL_TEACHER_BASE_URL", "OPENAI_BASE_URL")}
    env |= {
        "PATH": str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", ""),
        "DISTILL_PROJECT_DIR": str(root),
        "DAGSTER_HOME": str(home),
        EXECUTOR_ENV: executor,
        "DISTILL_TEACHER_CACHE_DIR": str(root.parent / f"{root.name}-teacher-cache"),
        "DISTILL_DVC_PULL": "0",
        "DVC_NO_ANALYTICS": "1",
        "DAGSTER_DISABLE_TELEMETRY": "yes",
    }
    return env | extra


def start_driver(
    env: dict[str, str], parent_run: str | None = None, run_config: dict | None = None
) -> subprocess.Popen:
    args = [sys.executable, "-c", DRIVER, JOB, parent_run or "", json.dumps(run_config or {})]
    return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish_driver(proc: subprocess.Popen, timeout: float = 150) -> dict:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"the run did not finish in {timeout} s:\n{err[-4000:]}") from None
    lines = out.strip().splitlines()
    assert proc.returncode == 0 and lines, f"driver failed ({proc.returncode}):\n{out}\n{err[-4000:]}"
    return json.loads(lines[-1])


def shard_rows(root: Path) -> pl.DataFrame:
    return pl.concat([pl.read_parquet(root / f"assets/shard_{i}/examples.parquet") for i in range(SHARDS)])


def deduped(root: Path) -> dict[str, pl.DataFrame]:
    return {n: pl.read_parquet(root / f"assets/deduped/{n}.parquet") for n in ("train", "val", "removed")}


@pytest.fixture(scope="module")
def in_process_outputs(tmp_path_factory) -> dict:
    """The recipe materialized through the same definitions with the in-process executor."""
    tmp = tmp_path_factory.mktemp("in_process")
    root = make_sharded_repo(tmp / "repo")
    env = project_env(root, tmp / "home", "in_process")
    result = finish_driver(start_driver(env, run_config={"execution": {"config": {"in_process": {}}}}))
    assert result["success"], result
    return {"shards": shard_rows(root), **deduped(root)}


@pytest.fixture
def celery_project(tmp_path: Path):
    """The sharded repo, a redis-server, two celery workers (2 pool processes each) loading the
    project's definitions with DISTILL_EXECUTOR=celery, and the environment to launch runs with."""
    redis_server_binary()
    root = make_sharded_repo(tmp_path / "repo")
    gate = tmp_path / "gate"
    gate.mkdir()
    with redis_server(tmp_path / "redis") as url:
        env = project_env(root, tmp_path / "home", "celery", **{BROKER_ENV: url, "SHARD_GATE": str(gate)})
        with celery_workers(env, tmp_path / "workers", count=2, concurrency=2) as workers:
            yield {"root": root, "env": env, "gate": gate, "workers": workers, "home": tmp_path / "home"}


def run_events(home: Path, run_id: str) -> list:
    with dg.DagsterInstance.from_config(str(home)) as instance:
        return list(instance.all_logs(run_id))


def shard_steps(events: list) -> set[str]:
    return {e.step_key for e in events if e.dagster_event and e.step_key and "synthesize" in e.step_key}


def test_four_shards_run_at_once_on_the_celery_workers_with_the_in_process_outputs(
    celery_project, in_process_outputs
):
    gate, env = celery_project["gate"], celery_project["env"]
    for i in range(SHARDS):  # every shard holds until all four are running at once
        (gate / str(i)).write_text("")
    driver = start_driver(env)
    deadline = time.monotonic() + 60
    while len(list(gate.glob("*.held"))) < SHARDS:
        if driver.poll() is not None or time.monotonic() > deadline:
            held = sorted(p.name for p in gate.glob("*.held"))
            for i in range(SHARDS):
                (gate / str(i)).unlink(missing_ok=True)
            driver.communicate(timeout=120)
            raise AssertionError(f"the {SHARDS} shards never ran at once (held at the same time: {held})")
        time.sleep(0.1)
    for i in range(SHARDS):
        (gate / str(i)).unlink()
    result = finish_driver(driver)
    assert result["success"], result

    events = run_events(celery_project["home"], result["run_id"])
    # Each shard step ran in a celery worker (the worker's engine event names it), on both workers.
    on_workers = {
        e.step_key: e.dagster_event.engine_event_data.metadata["Celery worker"].value
        for e in events
        if e.dagster_event
        and e.dagster_event.event_type == dg.DagsterEventType.ENGINE_EVENT
        and "in celery worker" in (e.message or "")
    }
    shards = shard_steps(events)
    assert len(shards) == SHARDS and shards <= set(on_workers), on_workers
    assert {on_workers[s].split("@")[0] for s in shards} == {"w0", "w1"}
    # The four steps overlapped in time: each started before any of them ended.
    starts = {
        e.step_key: e.timestamp for e in events if e.dagster_event_type == dg.DagsterEventType.STEP_START
    }
    ends = {
        e.step_key: e.timestamp for e in events if e.dagster_event_type == dg.DagsterEventType.STEP_SUCCESS
    }
    assert max(starts[s] for s in shards) < min(ends[s] for s in shards)
    assert set(step_outcomes(events).values()) == {"succeeded"}

    root = celery_project["root"]
    assert shard_rows(root).sort("id").equals(in_process_outputs["shards"].sort("id"))
    for name, frame in deduped(root).items():
        assert frame.equals(in_process_outputs[name]), name


def test_the_instance_pool_limit_holds_under_celery(celery_project):
    """Under celery a pool's limit is the instance's (`dagster instance concurrency set teacher 2`)."""
    gate, env, home = celery_project["gate"], celery_project["env"], celery_project["home"]
    with dg.DagsterInstance.from_config(str(home)) as instance:
        instance.event_log_storage.set_concurrency_slots("teacher", 2)
    for i in range(SHARDS):
        (gate / str(i)).write_text("")
    driver = start_driver(env)
    deadline = time.monotonic() + 60
    while len(list(gate.glob("*.held"))) < 2 and driver.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(4)  # four pool processes are free: only the limit keeps the other two shards waiting
    held = sorted(p.name for p in gate.glob("*.held"))
    for i in range(SHARDS):
        (gate / str(i)).unlink()
    result = finish_driver(driver)
    assert len(held) == 2, held
    assert result["success"], result


def wait_held(gate: Path, shard: int, driver: subprocess.Popen, timeout: float = 60) -> int:
    """The pid of shard `shard`'s held stage command, once it is held."""
    held = gate / f"{shard}.held"
    deadline = time.monotonic() + timeout
    while not held.exists() or not held.read_text():
        if driver.poll() is not None or time.monotonic() > deadline:
            (gate / str(shard)).unlink(missing_ok=True)
            raise AssertionError(f"shard {shard} never started: {driver.communicate(timeout=60)}")
        time.sleep(0.05)
    return int(held.read_text())


def step_outcomes(events: list) -> dict[str, str]:
    """Each step's last start/success/failure event type in a run."""
    kinds = {
        dg.DagsterEventType.STEP_START: "started",
        dg.DagsterEventType.STEP_SUCCESS: "succeeded",
        dg.DagsterEventType.STEP_FAILURE: "failed",
    }
    return {
        e.step_key: kinds[e.dagster_event.event_type]
        for e in events
        if e.dagster_event and e.dagster_event.event_type in kinds
    }


def test_a_worker_killed_mid_shard_fails_the_run_and_its_reexecution_has_every_row_once(
    celery_project, in_process_outputs
):
    gate, env, home, root = (celery_project[k] for k in ("gate", "env", "home", "root"))
    victim = 2
    (gate / str(victim)).write_text("")  # shard 2 holds mid-step; the others run through
    driver = start_driver(env)
    stage = psutil.Process(wait_held(gate, victim, driver))

    # The worker process executing that shard's step: the celery pool process among the stage command's
    # ancestors (stage <- shell <- dvc <- dvc guard <- pool process <- celery worker <- dagster-celery).
    chain = stage.parents()
    pool = next(
        p for p in chain if "worker" in p.cmdline() and any(a.endswith("/celery") for a in p.cmdline())
    )
    started = [stage, *chain[: chain.index(pool)]]  # what the step started: guard, dvc, shell, stage
    assert any("repro" in p.cmdline() for p in started)
    assert {w.proc.pid for w in celery_project["workers"]} & {p.pid for p in pool.parents()}
    pool.send_signal(signal.SIGKILL)  # no cleanup runs in it
    _, alive = psutil.wait_procs(started, timeout=45)
    assert not alive, f"processes the killed worker started outlived it: {alive}"  # none left writing
    (gate / str(victim)).unlink()

    first = finish_driver(driver)
    assert not first["success"]
    events = run_events(home, first["run_id"])
    outcomes = step_outcomes(events)
    interrupted = [step for step, outcome in outcomes.items() if outcome == "started"]
    assert len(interrupted) == 1, outcomes  # the killed step never ended
    lost = "\n".join(str(e.dagster_event.event_specific_data) for e in events if e.dagster_event)
    assert "WorkerLostError" in lost  # celery reported the worker it lost

    second = finish_driver(start_driver(env, first["run_id"]))
    assert second["success"], second
    retried = step_outcomes(run_events(home, second["run_id"]))
    assert interrupted[0] in retried and set(retried.values()) == {"succeeded"}
    assert not {s for s, o in outcomes.items() if o == "succeeded"} & set(retried)  # done steps not rerun

    # Every synthesized row exactly once, the same rows and splits as the in-process run.
    rows = shard_rows(root)
    assert rows["id"].n_unique() == rows.height
    assert set(rows["id"]) == set(in_process_outputs["shards"]["id"])
    merged = pl.concat([frame.select("id") for frame in deduped(root).values()])["id"]
    assert merged.n_unique() == merged.len() == rows.height
    for name, frame in deduped(root).items():
        assert frame.equals(in_process_outputs[name]), name


# ---------------------------------------------------------------------------------------------------
# Choosing the executor from the environment (no broker needed).


def test_the_environment_chooses_the_executor(tmp_path: Path):
    from dagster_celery.cli import get_validated_config

    from dagster_project.dvc_integration.executors import (
        celery_config,
        celery_worker_config,
        dvc_executor,
        needs_own_process,
    )
    from dagster_project.dvc_integration.location import project_executor

    assert project_executor(tmp_path, {}) is dvc_executor
    celery = project_executor(tmp_path, {EXECUTOR_ENV: "celery"})
    assert celery.name == "celery" and needs_own_process(celery, {})  # the run gets a process of its own
    assert celery_config({}) == {"broker": "redis://127.0.0.1:6379/0", "backend": "redis://127.0.0.1:6379/0"}
    env = {BROKER_ENV: "redis://10.0.0.5:6380/2", "DISTILL_CELERY_BACKEND": "redis://10.0.0.5:6380/3"}
    assert celery_config(env) == {"broker": "redis://10.0.0.5:6380/2", "backend": "redis://10.0.0.5:6380/3"}
    # The workers' config file says the same, as dagster-celery itself reads it.
    config = get_validated_config(str(celery_worker_config(tmp_path / "celery.yaml", env)))
    assert (config["broker"], config["backend"]) == (env[BROKER_ENV], env["DISTILL_CELERY_BACKEND"])
    cli = subprocess.run(
        [sys.executable, "-m", "dagster_project.dvc_integration.executors", "worker-config", "w.yaml"],
        cwd=tmp_path, env=os.environ | env, capture_output=True, text=True,
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    config = get_validated_config(str(tmp_path / "w.yaml"))
    assert (config["broker"], config["backend"]) == (env[BROKER_ENV], env["DISTILL_CELERY_BACKEND"])
    with pytest.raises(ValueError, match=r"DISTILL_EXECUTOR='dask' is not an executor; allowed: .*celery"):
        project_executor(tmp_path, {EXECUTOR_ENV: "dask"})


def test_under_celery_the_recipe_job_runs_on_the_celery_executor(tmp_path: Path, monkeypatch):
    from dagster_project.dvc_integration.location import build_code_location

    root = make_sharded_repo(tmp_path / "repo")
    monkeypatch.delenv(EXECUTOR_ENV, raising=False)
    assert "multiprocess" in json.dumps(build_code_location(root).resolve_job_def(JOB).run_config)
    monkeypatch.setenv(EXECUTOR_ENV, "celery")
    job = build_code_location(root).resolve_job_def(JOB)
    # No multiprocess run config (it would not validate against celery's schema): the workers run steps.
    assert job.executor_def.name == "celery"
    assert "multiprocess" not in json.dumps(job.run_config or {})
    monkeypatch.setenv(EXECUTOR_ENV, "dask")
    with pytest.raises(ValueError, match="DISTILL_EXECUTOR='dask'"):
        build_code_location(root)
