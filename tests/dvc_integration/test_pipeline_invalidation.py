"""DVC decides what is stale: a param edit reruns exactly the stages downstream of it, once."""

from helpers import dvc, executed, set_param


def test_param_change_reruns_exactly_downstream_and_second_repro_is_noop(fixture_repo):
    dvc("repro", cwd=fixture_repo)
    assert executed(fixture_repo) == ["retrieve", "synthesize", "dedup", "train", "evaluate"]

    set_param(fixture_repo, "dedup", "keep", 2)
    dvc("repro", cwd=fixture_repo)
    assert sorted(executed(fixture_repo)) == ["dedup", "evaluate", "train"]

    dvc("repro", cwd=fixture_repo)
    assert executed(fixture_repo) == []


def test_param_change_with_identical_output_stops_propagating(fixture_repo):
    dvc("repro", cwd=fixture_repo)
    executed(fixture_repo)
    set_param(fixture_repo, "dedup", "comment", "changed, output bytes are not")
    dvc("repro", cwd=fixture_repo)
    assert executed(fixture_repo) == ["dedup"]
