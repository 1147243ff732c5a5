"""Rebuilds are byte-identical: a fresh copy of the repo forced to rebuild the root recipe's data stages
(`dvc repro -f`, offline teacher) records exactly the output hashes of the committed dvc.lock, and a
second synthesize run with nothing changed leaves everything downstream fresh.

Scaled to the stages up to dedup (retrieve, synthesize, dedup): the student's training takes minutes to
half an hour on 2 shared cores, too slow to repeat here. train and evaluate read only dedup's output
files, so equal dedup hashes mean their recorded deps still hold.
"""

import json
import re

import pytest
import yaml
from helpers import copy_repo, dvc

pytestmark = pytest.mark.slow

DATA_STAGES = ["retrieve", "synthesize", "dedup"]


def outs(lock: dict, stage: str) -> dict[str, str]:
    return {o["path"]: o["md5"] for o in lock["stages"][stage]["outs"]}


def test_forced_rebuild_matches_the_committed_lock_and_an_unchanged_synthesize_stales_nothing(tmp_path):
    root = copy_repo(tmp_path / "repo", drop_locks=False)
    committed = yaml.safe_load((root / "dvc.lock").read_text())
    for stage in DATA_STAGES:
        dvc("repro", "-f", "--single-item", f"dvc.yaml:{stage}", cwd=root, timeout=1200)
    rebuilt = yaml.safe_load((root / "dvc.lock").read_text())
    for stage in DATA_STAGES:
        assert outs(rebuilt, stage) == outs(committed, stage), f"{stage}: output bytes differ from dvc.lock"
    status = dvc("status", "--json", *(f"dvc.yaml:{s}" for s in DATA_STAGES), cwd=root).stdout
    assert json.loads(status[status.index("{") :]) == {}, status

    # synthesize again with nothing changed (now every teacher answer comes from the cache): its
    # output bytes are the same, so nothing downstream runs.
    dvc("repro", "-f", "--single-item", "dvc.yaml:synthesize", cwd=root, timeout=1200)
    out = dvc("repro", "dvc.yaml:dedup", cwd=root, timeout=1200).stdout
    assert re.findall(r"Running stage '([^']+)'", out) == [], out
    assert outs(yaml.safe_load((root / "dvc.lock").read_text()), "dedup") == outs(committed, "dedup")
