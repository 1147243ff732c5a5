"""One environment where DVC's hydra (exp run -S) and Dagster's selection parser both work
(DESIGN.md "Known traps": antlr 4.9 vs 4.13)."""

import dagster as dg
from helpers import dvc, executed


def test_hydra_overrides_and_dagster_selection_parse_in_one_interpreter():
    from dvc.utils.hydra import to_hydra_overrides

    assert to_hydra_overrides(["a.b=1"])
    selection = dg.AssetSelection.from_string("kind:dvc and key:deduped")
    assert selection is not None
    import omegaconf

    assert omegaconf.OmegaConf.create({"a": 1}).a == 1


def test_dvc_exp_run_with_set_param(fixture_repo):
    dvc("repro", cwd=fixture_repo)
    executed(fixture_repo)
    dvc("exp", "run", "-S", "dedup.keep=1", cwd=fixture_repo)
    assert sorted(executed(fixture_repo)) == ["dedup", "evaluate", "train"]
    assert "keep: 1" in (fixture_repo / "params.yaml").read_text()


def test_definitions_with_a_selection_string_job_load():
    from dagster_project.definitions import defs

    job = defs.resolve_job_def("main")
    assert job is not None
    job = dg.define_asset_job("j", selection="key:corpus+")
    defs2 = dg.Definitions(jobs=[job], assets=defs.assets, resources=defs.resources)
    assert set(defs2.resolve_job_def("j").asset_layer.selected_asset_keys) >= {dg.AssetKey("corpus")}
