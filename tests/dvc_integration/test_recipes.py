"""Many recipes, one code location: every folder holding a dvc.yaml is a recipe whose assets carry its
name as key prefix and group; a broken recipe is named and hides nothing else."""

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
import yaml
from helpers import _env, dvc, executed, run

from dagster_project.dvc_integration import build_code_location, load_project
from dagster_project.dvc_integration.project import recipe_name
from dagster_project.dvc_integration.versions import read_lock

EXPECTED_KEYS = {
    "default/corpus",
    "default/synthesized",
    "default/deduped",
    "default/student",
    "default/eval_report",
    "alpha/corpus",
    "alpha/synthesized",
    "alpha/score",
    "beta/corpus",
    "beta/shard_1",
    "beta/shard_2",
}


def specs_by_key(defs: dg.Definitions) -> dict[str, dg.AssetSpec]:
    return {s.key.to_user_string(): s for s in defs.resolve_all_asset_specs()}


def test_recipe_names():
    assert recipe_name(".") == "default"
    assert recipe_name("examples/synthesizrr") == "synthesizrr"
    assert recipe_name("examples/few-gen") == "few_gen"
    assert recipe_name("recipes/qa/v2") == "recipes_qa_v2"


def test_every_recipe_loads_under_its_own_prefix_and_group(recipes_repo):
    project = load_project(recipes_repo)
    assert [(r.name, r.dvc_yaml, len(r.stages), r.error) for r in project.recipes] == [
        ("default", "dvc.yaml", 5, None),
        ("alpha", "examples/alpha/dvc.yaml", 3, None),
        ("beta", "examples/beta/dvc.yaml", 3, None),
    ]
    beta = project.recipe("beta")
    assert [s.address for s in beta.stages] == [
        "examples/beta/dvc.yaml:corpus",
        "examples/beta/dvc.yaml:shard@1",
        "examples/beta/dvc.yaml:shard@2",
    ]
    # Paths are repo-relative, also a recipe's dep outside its folder (alpha's `../../steps.py`).
    alpha = project.recipe("alpha")
    assert alpha.stage("retrieve").deps == ("steps.py", "examples/alpha/data/source.txt")
    assert alpha.stage("score").metrics == ("examples/alpha/assets/score/metrics.json",)

    defs = build_code_location(recipes_repo)
    specs = specs_by_key(defs)
    assert set(specs) == EXPECTED_KEYS
    for key, spec in specs.items():
        assert spec.group_name == key.split("/")[0], key
    # Lineage stays inside each recipe.
    deps = {k: {d.asset_key.to_user_string() for d in s.deps} for k, s in specs.items()}
    assert deps["alpha/synthesized"] == {"alpha/corpus"} and deps["alpha/score"] == {"alpha/synthesized"}
    assert deps["beta/shard_1"] == deps["beta/shard_2"] == {"beta/corpus"}
    assert deps["default/corpus"] == deps["alpha/corpus"] == deps["beta/corpus"] == set()
    assert deps["default/eval_report"] == {"default/deduped", "default/student"}
    # meta.dagster facts still reach the specs; the root's `group: data` becomes a tag.
    assert specs["alpha/corpus"].description.startswith("Alpha's passages.")
    assert specs["alpha/corpus"].owners == ["team:alpha"]
    assert specs["default/corpus"].tags["group"] == "data"
    assert specs["alpha/corpus"].metadata["dvc/stage"] == "examples/alpha/dvc.yaml:retrieve"
    assert {s.name for s in defs.sensors} == {"dvc_lock_sensor"}
    assert {j.name for j in defs.jobs} == {"main", "recipe__default", "recipe__alpha", "recipe__beta"}
    alpha_job = defs.resolve_job_def("recipe__alpha")
    assert {k.to_user_string() for k in alpha_job.asset_layer.selected_asset_keys} == {
        "alpha/corpus",
        "alpha/synthesized",
        "alpha/score",
    }


def test_a_broken_recipe_is_named_and_hides_nothing(broken_recipes_repo):
    defs = build_code_location(broken_recipes_repo)
    assert set(specs_by_key(defs)) == EXPECTED_KEYS
    sensors = {s.name: s for s in defs.sensors}
    assert set(sensors) == {"dvc_lock_sensor", "recipe_error__broken", "recipe_error__badparams"}
    messages = {}
    for name in ("recipe_error__broken", "recipe_error__badparams"):
        assert sensors[name].default_status == dg.DefaultSensorStatus.RUNNING
        with pytest.raises(Exception) as err:  # every tick fails with the recipe's error
            sensors[name](dg.build_sensor_context())
        messages[name] = str(err.value)
    broken = messages["recipe_error__broken"]
    assert "recipe 'broken'" in broken and "examples/broken/dvc.yaml" in broken
    assert "YAML" in broken and "line 3" in broken  # DVC's message and the parser's position
    bad = messages["recipe_error__badparams"]
    assert "recipe 'badparams'" in bad and "examples/badparams/dvc.yaml" in bad and "top_kk" in bad


def test_the_code_location_logs_broken_recipes_and_loads(broken_recipes_repo, tmp_path):
    """`dagster definitions validate` on the real definitions module: it loads, and says why recipes
    are missing."""
    env = _env() | {"DISTILL_PROJECT_DIR": str(broken_recipes_repo), "DAGSTER_HOME": str(tmp_path)}
    dagster = str(Path(sys.executable).parent / "dagster")
    proc = subprocess.run(
        [dagster, "definitions", "validate", "-m", "dagster_project.definitions"],
        cwd=broken_recipes_repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "recipe 'broken' did not load" in out and "examples/broken/dvc.yaml" in out
    assert "recipe 'badparams' did not load" in out and "top_kk" in out


def test_materializing_a_prefixed_asset_runs_its_recipe_stage(recipes_repo, instance):
    root, alpha = recipes_repo, recipes_repo / "examples/alpha"
    data = yaml.safe_load((alpha / "dvc.yaml").read_text())
    data["stages"]["score"]["meta"] = {
        "dagster": {
            "checks": [{"name": "has_chars", "file": "assets/score/metrics.json", "assert": "chars > 0"}]
        }
    }
    (alpha / "dvc.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    run(["git", "commit", "-qam", "check"], cwd=root)
    defs = build_code_location(root)

    result = dg.materialize(
        defs.assets, selection="key:alpha/corpus", instance=instance, resources=defs.resources
    )
    assert result.success
    assert executed(alpha) == ["retrieve"] and executed(root) == []
    assert not (root / "dvc.lock").exists()
    lock = yaml.safe_load((alpha / "dvc.lock").read_text())["stages"]
    assert list(lock) == ["retrieve"] and lock["retrieve"]["outs"][0]["path"] == "assets/corpus"
    mat = instance.get_latest_materialization_event(dg.AssetKey(["alpha", "corpus"])).asset_materialization
    assert mat.tags["dvc/recipe"] == "alpha" and mat.tags["dvc/stage"] == "retrieve"
    assert mat.tags["dagster/data_version"]
    assert instance.get_latest_materialization_event(dg.AssetKey(["default", "corpus"])) is None

    # The rest of alpha, with its check read from alpha's folder; then beta's foreach entries.
    result = dg.materialize(defs.assets, selection="group:alpha", instance=instance, resources=defs.resources)
    assert result.success
    assert [(e.check_name, e.passed) for e in result.get_asset_check_evaluations()] == [("has_chars", True)]
    result = dg.materialize(defs.assets, selection="group:beta", instance=instance, resources=defs.resources)
    assert result.success
    project = load_project(root, validate_params=False)
    beta_lock = read_lock(root, project.recipe("beta"))
    assert set(beta_lock) == {"corpus", "shard@1", "shard@2"}
    assert beta_lock["shard@2"]["outs"][0]["path"] == "examples/beta/assets/shard_2"  # repo-relative
    assert dvc("status", "examples/beta/dvc.yaml", cwd=root).stdout.strip().endswith("up to date.")
    assert os.listdir(root / "examples/beta/assets") and not (root / "assets").exists()


@pytest.mark.parametrize(
    ("wdir", "outs", "name"),
    [
        (".", ("assets/corpus",), "corpus"),
        ("examples/x", ("examples/x/assets/corpus",), "corpus"),
        ("examples/x", ("examples/x/assets/students/s",), "students_s"),  # foreach outs in sub-folders
        ("examples/x", ("examples/x/assets/judged/s",), "judged_s"),
        (".", ("assets/judged/big-one",), "judged_big_one"),
        ("examples/x", ("examples/x/out/a/b",), "b"),  # outside assets/: the folder's name
        ("examples/x", ("examples/x/report.json",), "report"),  # outputs in the recipe folder itself
    ],
)
def test_asset_names_come_from_output_folders(wdir, outs, name):
    from dagster_project.dvc_integration.project import DvcStage
    from dagster_project.dvc_integration.translator import DvcTranslator

    stage = DvcStage(name="report", cmd="true", deps=(), outs=outs, params={}, wdir=wdir)
    assert DvcTranslator().get_asset_name(stage) == name


def test_a_recipe_with_a_dep_outside_the_repo_loads(recipes_repo, tmp_path):
    """An absolute dep outside the repo (a test set or a source elsewhere on disk) is kept absolute: the
    code location loads and the recipe's assets are there, the dep listed as it is."""
    outside = tmp_path / "elsewhere" / "source.txt"
    outside.parent.mkdir()
    outside.write_text("far away\n")
    path = recipes_repo / "examples/alpha/dvc.yaml"
    spec = yaml.safe_load(path.read_text())
    spec["stages"]["retrieve"]["deps"].append(str(outside))
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    project = load_project(recipes_repo)
    alpha = project.recipe("alpha")
    assert alpha.ok, alpha.error
    assert str(outside) in alpha.stage("retrieve").deps
    assert set(specs_by_key(build_code_location(recipes_repo))) == EXPECTED_KEYS
