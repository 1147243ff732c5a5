"""`synthesize --shard i/N`: N shards send exactly the requests of one unsharded run, and shard processes
running at once share one teacher cache without corrupting it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from helpers import REPO_ROOT, synthesize_recipe_params

from dagster_project.stages.common import read_run_facts
from dagster_project.teacher.cache import ResponseCache


@pytest.fixture
def recipe(tmp_path: Path) -> Path:
    """params.yaml (the root recipe's synthesize section, 3 pairs a passage) and 10 demo-world passages."""
    synthesize_recipe_params(tmp_path, constants={"count": 3})
    lines = (REPO_ROOT / "data/demo_world/passages.jsonl").read_text().splitlines()[:10]
    rows = [json.loads(line) for line in lines]
    pl.DataFrame({"passage_id": [r["id"] for r in rows], "text": [r["text"] for r in rows]}).write_parquet(
        tmp_path / "grounding.parquet"
    )
    return tmp_path


def _start(recipe: Path, out: str, cache: Path, *extra: str, mode: str = "read-write") -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("DISTILL_TEACHER_BASE_URL", "OPENAI_BASE_URL")}
    env |= {"DISTILL_TEACHER_CACHE_DIR": str(cache), "DISTILL_TEACHER_CACHE_MODE": mode}
    cmd = [sys.executable, "-m", "dagster_project.stages.synthesize", "--params", "params.yaml",
           "--input", "grounding.parquet", "--out", out, *extra]  # fmt: skip
    return subprocess.Popen(
        cmd, cwd=recipe, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _finish(proc: subprocess.Popen) -> str:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    return err


def _examples(folder: Path) -> pl.DataFrame:
    return pl.read_parquet(folder / "examples.parquet").sort("id")


def test_shards_run_at_once_cover_every_row_once_and_share_the_cache(recipe):
    cache = recipe / "cache"
    # Four shards and a second copy of shard 0 at the same time: five processes, one cache, and two of them
    # writing the same keys.
    procs = [_start(recipe, f"shard{i}", cache, "--shard", f"{i}/4") for i in range(4)]
    procs.append(_start(recipe, "shard0-again", cache, "--shard", "0/4"))
    for proc in procs:
        _finish(proc)
    shards = [_examples(recipe / f"shard{i}") for i in range(4)]
    assert all(s.height > 0 for s in shards)
    merged = pl.concat(shards).sort("id")
    assert merged["id"].n_unique() == merged.height  # no row in two shards
    assert _examples(recipe / "shard0-again").equals(shards[0])
    stats = [
        json.loads((recipe / f"shard{i}/stats.json").read_text())
        | read_run_facts(recipe / f"shard{i}")["stats.json"]
        for i in range(4)
    ]
    assert sum(s["n_requests"] for s in stats) == 10 and stats[1]["shard"] == "1/4"

    # Every cache line is whole (no interleaved writes), and the cache holds every request once.
    for shard_file in cache.glob("*.jsonl"):
        for line in shard_file.read_text().splitlines():
            json.loads(line)
    # (shard 0 and its copy race: either may answer some samples from the other's cache, so count lookups)
    assert len(ResponseCache(cache)) == sum(s["calls"] + s["cache_hits"] for s in stats)

    # The unsharded run from that cache alone (replay: a miss would be an error) is the shards' union.
    _finish(_start(recipe, "whole", cache, mode="replay"))
    whole = (
        json.loads((recipe / "whole/stats.json").read_text()) | read_run_facts(recipe / "whole")["stats.json"]
    )
    assert whole["calls"] == 0 and whole["cache_hits"] == whole["n_requests"] == 10
    assert _examples(recipe / "whole").equals(merged)

    # dedup merges the shards.
    gold = REPO_ROOT / "data/demo_world/gold_test.jsonl"
    shard_dirs = [str(recipe / f"shard{i}") for i in range(4)]
    dedup = subprocess.run(
        [sys.executable, "-m", "dagster_project.stages.dedup", "--params", "params.yaml",
         "--synthesized", *shard_dirs, "--gold", str(gold), "--out", "deduped"],
        cwd=recipe, capture_output=True, text=True,
    )  # fmt: skip
    assert dedup.returncode == 0, dedup.stderr
    assert json.loads(dedup.stdout.strip().splitlines()[-1])["n_in"] == merged.height


@pytest.mark.parametrize("spec", ["4/4", "x", "1/0"])
def test_a_bad_shard_is_named(recipe, spec):
    proc = _start(recipe, "out", recipe / "cache", "--shard", spec)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "--shard" in err and spec in err


def test_more_shards_than_rows_is_an_error(recipe):
    proc = _start(recipe, "out", recipe / "cache", "--shard", "11/12")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0 and "use at most 10 shards" in err
