"""kill -9 a synthesis run at a random point, resume it: no duplicate, no missing row, no repeated call.

The synthesize stage runs as a subprocess against the local HTTP server (the real offline teacher with
some latency); the server counts every call it receives.
"""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
from helpers import synthesize_recipe_params

from dagster_project.stages.common import read_run_facts
from dagster_project.teacher.cache import ResponseCache
from dagster_project.teacher.server import serve_in_thread

REPO = Path(__file__).resolve().parents[2]
N_PASSAGES = 90
CONCURRENCY = 8


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    """params.yaml and a corpus of N_PASSAGES grounding passages."""
    root = tmp_path_factory.mktemp("resume")
    synthesize_recipe_params(root, teacher_model="offline-teacher")
    corpus = root / "corpus"
    corpus.mkdir()
    cities = ["Paris", "Lyon", "Oslo", "Lima", "Quito", "Accra", "Hanoi", "Perth", "Cork"]
    texts = [
        f"Alice Smith{i} founded the Brightwater{i} company in {1800 + i}. "
        f"Its first office was in {cities[i % len(cities)]}, and it had {10 + i} workers."
        for i in range(N_PASSAGES)
    ]
    pl.DataFrame(
        {
            "passage_id": [f"p{i}" for i in range(N_PASSAGES)],
            "query": ["q"] * N_PASSAGES,
            "rank": list(range(N_PASSAGES)),
            "score": [1.0] * N_PASSAGES,
            "text": texts,
        }
    ).write_parquet(corpus / "grounding.parquet")
    return root


def stage_cmd(root: Path, out: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "dagster_project.stages.synthesize",
        "--params",
        str(root / "params.yaml"),
        "--input",
        str(root / "corpus" / "grounding.parquet"),
        "--out",
        str(out),
    ]


def stage_env(url: str, cache: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_BASE_URL", "DISTILL_TEACHER_CACHE_MODE")}
    env.update(
        PYTHONPATH=str(REPO),
        DISTILL_TEACHER_BASE_URL=url,
        DISTILL_TEACHER_CACHE_DIR=str(cache),
        DISTILL_TEACHER_CONCURRENCY=str(CONCURRENCY),
        TQDM_DISABLE="1",
    )
    return env


@pytest.fixture(scope="module")
def reference(recipe):
    """An uninterrupted run: its examples, and the calls it needed."""
    with serve_in_thread(latency_ms=30) as url:
        out = recipe / "reference"
        subprocess.run(stage_cmd(recipe, out), env=stage_env(url, recipe / "ref-cache"), check=True)
        calls = url.stats["requests"]
    return pl.read_parquet(out / "examples.parquet"), calls


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kill_minus_9_then_resume(recipe, reference, tmp_path, seed):
    ref_examples, ref_calls = reference
    rng = random.Random(seed)
    kill_at = rng.randint(5, ref_calls - 10)  # calls the server has received when the run is killed
    cache = tmp_path / "cache"
    out = tmp_path / "synthesized"
    with serve_in_thread(latency_ms=30) as url:
        env = stage_env(url, cache)
        proc = subprocess.Popen(stage_cmd(recipe, out), env=env)
        deadline = time.monotonic() + 300
        while url.stats["requests"] < kill_at and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        server_in_flight = url.stats["in_flight"]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        calls_killed = url.stats["requests"]
        cached = len(ResponseCache(cache))
        assert not out.exists()  # the stage writes its output atomically, at the end
        subprocess.run(stage_cmd(recipe, out), env=env, check=True)
        calls_total = url.stats["requests"]
    lost = calls_killed - cached  # calls answered (or not) but never written to the cache
    print(
        f"seed={seed} kill_at={kill_at} calls_before_kill={calls_killed} cached={cached} lost={lost} "
        f"server_in_flight={server_in_flight} calls_total={calls_total} reference={ref_calls}"
    )
    assert 0 < cached < ref_calls
    assert 0 <= lost <= CONCURRENCY  # only requests in flight at the kill are lost
    assert calls_total == ref_calls + lost  # the rerun repeats none of the finished calls
    assert calls_total <= ref_calls + CONCURRENCY
    examples = pl.read_parquet(out / "examples.parquet")
    assert examples["id"].n_unique() == examples.height  # no duplicate
    assert examples.sort("id").equals(ref_examples.sort("id"))  # no missing row, none extra


def test_rebuild_with_full_cache_makes_zero_calls(recipe, reference, tmp_path):
    """An unchanged rebuild (same prompts, params, corpus) is served from the cache: zero calls."""
    with serve_in_thread(latency_ms=0) as url:
        env = stage_env(url, recipe / "ref-cache")
        subprocess.run(stage_cmd(recipe, tmp_path / "again"), env=env, check=True)
        assert url.stats["requests"] == 0
    stats = read_run_facts(tmp_path / "again")["stats.json"]
    assert stats["calls"] == 0 and stats["cache_hits"] >= N_PASSAGES
