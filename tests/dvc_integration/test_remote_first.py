"""Materialize tries the remote first (`dvc repro --pull`): on a fresh clone whose remote holds the
artifacts, nothing is recomputed, and each asset's `dvc_outcome` metadata says how
its outputs came (pulled, restored from the run cache, recomputed). A repo without a remote recomputes
as before."""

import dagster as dg
from helpers import dvc, executed, run, set_param

from dagster_project.dvc_integration import DvcCliResource, build_dvc_assets
from dagster_project.dvc_integration.assets import OUTCOME_METADATA, PULLED, RECOMPUTED, RUN_CACHE

NAMES = ("corpus", "synthesized", "deduped", "student", "eval_report")
KEYS = {n: dg.AssetKey(["default", n]) for n in NAMES}


def _materialize(root, instance, *names):
    result = dg.materialize(
        build_dvc_assets(root),
        selection=[KEYS[n] for n in names],
        instance=instance,
        resources={"dvc": DvcCliResource(project_dir=str(root))},
    )
    assert result.success
    return {
        m.asset_key.path[-1]: m.metadata[OUTCOME_METADATA].value
        for m in result.get_asset_materialization_events()
        for m in [m.materialization]
    }


def _published(origin, tmp_path):
    """The origin built, pushed to a folder remote and committed; returns a fresh clone of it."""
    dvc("remote", "add", "-d", "shared", str(tmp_path / "remote"), cwd=origin)
    dvc("repro", "--pull", cwd=origin)  # the remote is still empty: everything is recomputed
    dvc("push", "--run-cache", cwd=origin)
    run(["git", "add", "-A"], cwd=origin)
    run(["git", "commit", "-qm", "built"], cwd=origin)
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(origin), str(clone)], cwd=tmp_path)
    return clone


def test_a_fresh_clone_pulls_every_asset_and_says_how_each_output_came(fixture_repo, instance, tmp_path):
    clone = _published(fixture_repo, tmp_path)
    outcomes = _materialize(clone, instance, *NAMES)
    assert executed(clone) == []  # nothing ran: every output came from the remote
    assert outcomes == dict.fromkeys(NAMES, PULLED)
    assert (clone / "assets/eval_report/metrics.json").exists()

    # A value nobody ran: recomputed; back to a value this clone ran: restored from its run cache.
    # (DVC restores a run from the *remote's* run cache only for file outputs: the `.dir` object a
    # directory output's run-cache entry names is not pushed, DVC 3.x; these stages write folders.)
    set_param(clone, "train", "lr", 0.3)
    assert _materialize(clone, instance, "student") == {"student": RECOMPUTED}
    assert executed(clone) == ["train"]
    set_param(clone, "train", "lr", 0.1)
    _materialize(clone, instance, "student")
    executed(clone)
    set_param(clone, "train", "lr", 0.3)
    assert _materialize(clone, instance, "student") == {"student": RUN_CACHE}
    assert executed(clone) == []
    assert "lr=0.3" in (clone / "assets/student/model.txt").read_text()


def test_without_a_remote_a_missing_output_is_recomputed(fixture_repo, instance):
    dvc("repro", cwd=fixture_repo)
    executed(fixture_repo)
    run(["rm", "-rf", "assets/corpus", ".dvc/cache"], cwd=fixture_repo)
    assert _materialize(fixture_repo, instance, "corpus") == {"corpus": RECOMPUTED}
    assert executed(fixture_repo) == ["retrieve"]
