"""One environment where DVC's hydra (exp run -S) and Dagster's selection parser both work
(docs/known-traps.md: antlr 4.9 vs 4.13)."""

import dagster as dg
from helpers import dvc, executed


def test_hydra_overrides_and_dagster_selection_parse_in_one_interpreter():
    from dvc.utils.hydra import to_hydra_overrides

    assert to_hydra_overrides(["a.b=1"])
    selection = dg.AssetSelection.from_string("kind:dvc and key:default/deduped")
    assert selection is not None
    import omegaconf

    assert omegaconf.OmegaConf.create({"a": 1}).a == 1


def test_dvc_exp_run_with_set_param(fixture_repo):
    dvc("repro", cwd=fixture_repo)
    executed(fixture_repo)
    dvc("exp", "run", "-S", "dedup.keep=1", cwd=fixture_repo)
    assert sorted(executed(fixture_repo)) == ["dedup", "evaluate", "train"]
    assert "keep: 1" in (fixture_repo / "params.yaml").read_text()


def test_definitions_with_a_selection_string_job_load(fixture_repo):
    from dagster_project.definitions import defs  # the repo's own code location loads

    assert defs.resolve_job_def("main") is not None
    from dagster_project.dvc_integration import build_code_location

    fixture_defs = build_code_location(fixture_repo)
    job = dg.define_asset_job("j", selection="key:default/corpus+")
    defs2 = dg.Definitions(jobs=[job], assets=fixture_defs.assets, resources=fixture_defs.resources)
    selected = set(defs2.resolve_job_def("j").asset_layer.selected_asset_keys)
    names = ("corpus", "synthesized", "deduped", "student", "eval_report")  # corpus and everything downstream
    assert selected == {dg.AssetKey(["default", n]) for n in names}
