"""Bad params fail before any work, with a message naming the key or file and the fix."""

import shutil
import sys

import pytest
import yaml
from helpers import REPO_ROOT, run

from dagster_project.params_schema import ParamsError, validate_params


@pytest.fixture
def params() -> dict:
    return yaml.safe_load((REPO_ROOT / "params.yaml").read_text())


def test_shipped_params_are_valid(params):
    validate_params(params, root=REPO_ROOT)


def test_unknown_key_is_named_with_a_suggestion_and_the_allowed_keys(params):
    params["dedup"]["near_treshold"] = params["dedup"].pop("near_threshold")
    with pytest.raises(ParamsError) as err:
        validate_params(params, root=REPO_ROOT)
    msg = str(err.value)
    assert "dedup.near_treshold: unknown key" in msg
    assert "did you mean 'near_threshold'" in msg
    assert "Allowed keys here:" in msg and "val_fraction" in msg


def test_wrong_type_names_key_and_value(params):
    params["train"]["epochs"] = "three"
    with pytest.raises(ParamsError, match=r"train\.epochs: .*'three'.*str"):
        validate_params(params, root=REPO_ROOT)


def test_value_outside_allowed_set_lists_allowed_values(params):
    params["dedup"]["near_scorer"] = "jaccard"
    with pytest.raises(ParamsError) as err:
        validate_params(params, root=REPO_ROOT)
    assert "dedup.near_scorer: 'jaccard' is not allowed" in str(err.value)
    assert "token_sort_ratio" in str(err.value)


def test_missing_prompt_file_is_named(params):
    params["synthesize"]["prompt"] = "prompts/nope.yaml"
    with pytest.raises(ParamsError, match=r"synthesize\.prompt: file 'prompts/nope\.yaml' does not exist"):
        validate_params(params, root=REPO_ROOT)


def test_missing_section_is_named(params):
    del params["evaluate"]
    with pytest.raises(ParamsError, match=r"evaluate: required key is missing"):
        validate_params(params, root=REPO_ROOT)


def test_a_stage_with_bad_params_exits_before_writing_anything(tmp_path, params):
    """The first stage of `dvc repro` stops at once: no output folder appears."""
    work = tmp_path / "recipe"
    shutil.copytree(REPO_ROOT / "data", work / "data")
    shutil.copytree(REPO_ROOT / "prompts", work / "prompts")
    params["retrieve"]["top_kk"] = 3
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    proc = run(
        [sys.executable, "-m", "dagster_project.stages.retrieve", "--params", "params.yaml", "--out", "out"],
        cwd=work,
        check=False,
    )
    assert proc.returncode == 2
    assert "retrieve.top_kk: unknown key" in proc.stderr and "did you mean 'top_k'" in proc.stderr
    assert not (work / "out").exists()
    cli = run(
        [sys.executable, "-m", "dagster_project.cli", "check", "--project", str(work)], cwd=work, check=False
    )
    assert cli.returncode == 2 and "retrieve.top_kk" in cli.stderr


def test_dedup_nested_unknown_key_suggests_the_right_one(params):
    params["dedup"]["lsh"]["band"] = params["dedup"]["lsh"].pop("bands")
    with pytest.raises(ParamsError) as err:
        validate_params(params, root=REPO_ROOT)
    assert "dedup.lsh.band: unknown key. did you mean 'bands'?" in str(err.value)
    assert "dedup.lsh.bands: required key is missing" in str(err.value)


def test_dedup_new_keys_are_checked(params):
    bad = yaml.safe_load(yaml.safe_dump(params))
    bad["dedup"]["keep"] = "highest"  # needs keep_column
    with pytest.raises(ParamsError, match="keep: highest needs keep_column"):
        validate_params(bad, root=REPO_ROOT)
    bad = yaml.safe_load(yaml.safe_dump(params))
    bad["dedup"]["filters"]["refusal_patterns"] = ["(unclosed"]
    with pytest.raises(ParamsError, match=r"dedup\.filters\.refusal_patterns: .*not a valid regex"):
        validate_params(bad, root=REPO_ROOT)
    bad = yaml.safe_load(yaml.safe_dump(params))
    bad["dedup"]["filters"]["min_chars"] = {"title": 3}
    with pytest.raises(ParamsError, match=r"dedup\.filters\.min_chars\.title"):
        validate_params(bad, root=REPO_ROOT)
    bad = yaml.safe_load(yaml.safe_dump(params))
    bad["dedup"]["decontaminate"]["near_scorer"] = "jaccard"
    with pytest.raises(ParamsError, match=r"dedup\.decontaminate\.near_scorer: 'jaccard' is not allowed"):
        validate_params(bad, root=REPO_ROOT)
    bad = yaml.safe_load(yaml.safe_dump(params))
    bad["dedup"]["judge"].update(enabled=True, prompt="prompts/nope.yaml")
    with pytest.raises(ParamsError, match=r"dedup\.judge\.prompt: file 'prompts/nope\.yaml' does not exist"):
        validate_params(bad, root=REPO_ROOT)
    params["dedup"]["judge"]["prompt"] = "prompts/nope.yaml"  # off: the file is not needed
    validate_params(params, root=REPO_ROOT)
