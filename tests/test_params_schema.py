"""Bad params fail before any work, with a message naming the key or file and the fix."""

import shutil
import sys
from pathlib import Path

import pytest
import yaml
from helpers import REPO_ROOT, run

from dagster_project.params_schema import ParamsError, validate_params, validate_recipe


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
    with pytest.raises(ParamsError, match=r"evaluate\.gold_test: required key is missing"):
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
    bad["dedup"]["decontaminate"]["near_scorer"] = "jaccard"
    with pytest.raises(ParamsError, match=r"dedup\.decontaminate\.near_scorer: 'jaccard' is not allowed"):
        validate_params(bad, root=REPO_ROOT)
    bad = yaml.safe_load(yaml.safe_dump(params))
    bad["dedup"]["judge"].update(enabled=True, prompt="prompts/nope.yaml")
    with pytest.raises(ParamsError, match=r"dedup\.judge\.prompt: file 'prompts/nope\.yaml' does not exist"):
        validate_params(bad, root=REPO_ROOT)
    params["dedup"]["judge"]["prompt"] = "prompts/nope.yaml"  # off: the file is not needed
    validate_params(params, root=REPO_ROOT)


# --------------------------------------------------------------------------------- recipes of stage kinds

RECIPE_DVC = """\
stages:
  retrieve:
    cmd: python -m dagster_project.stages.retrieve --params params.yaml --out assets/corpus
    deps: [passages.jsonl, queries.txt]
    params: [retrieve]
    outs: [assets/corpus]
  write_rr:
    cmd: >-
      python -m dagster_project.stages.synthesize --params params.yaml --section write_rr
      --input assets/corpus/grounding.parquet --out assets/rr
    deps: [assets/corpus, prompts/ask.yaml]
    params: [write_rr]
    outs: [assets/rr]
"""

ASK = """\
name: {name}
messages: [{{role: user, content: "<passage>{{{{ passage }}}}</passage> <count>{{{{ count }}}}</count>"}}]
output_schema: {{type: object}}
"""


@pytest.fixture
def recipe(tmp_path) -> Path:
    """A two-stage recipe naming its stages freely (`write_rr` runs the synthesize kind)."""
    run(["git", "init", "-q"], cwd=tmp_path)
    run([sys.executable, "-m", "dvc", "init", "-q"], cwd=tmp_path)
    (tmp_path / "dvc.yaml").write_text(RECIPE_DVC)
    (tmp_path / "passages.jsonl").write_text('{"text": "Alice founded Brightwater in 1921."}\n')
    (tmp_path / "queries.txt").write_text("Alice\n")
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "ask.yaml").write_text(ASK.format(name="grounded_qa"))
    params = {
        "retrieve": {"sources": [{"path": "passages.jsonl"}], "queries": "queries.txt", "top_k": 2},
        "write_rr": {
            "prompt": "prompts/ask.yaml",
            "variables": {"passage": "text"},
            "constants": {"count": 2},
            "id_columns": ["question"],
        },
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return tmp_path


def _edit(recipe: Path, section: str, **changes) -> None:
    params = yaml.safe_load((recipe / "params.yaml").read_text())
    params[section].update(changes)
    (recipe / "params.yaml").write_text(yaml.safe_dump(params))


def test_a_recipe_is_validated_against_the_kinds_its_stages_run(recipe):
    validated = validate_recipe(recipe)
    assert set(validated) == {"retrieve", "write_rr"}
    assert validated["write_rr"].temperature == 0.7  # the default lives in the kind's model
    assert validated["retrieve"].chunk_words == 80


def test_unknown_key_in_a_freely_named_section_suggests_the_kind_key(recipe):
    _edit(recipe, "write_rr", temprature=0.2)
    with pytest.raises(ParamsError) as err:
        validate_recipe(recipe)
    assert "write_rr.temprature: unknown key. did you mean 'temperature'?" in str(err.value)


def test_a_typo_in_a_section_name_is_named_with_a_suggestion(recipe):
    params = yaml.safe_load((recipe / "params.yaml").read_text())
    params["retreive"] = params.pop("retrieve")
    (recipe / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(ParamsError) as err:
        validate_recipe(recipe)
    msg = str(err.value)
    assert "retreive: no stage reads this section. did you mean 'retrieve'?" in msg
    assert "retrieve.sources: required key is missing" in msg


def test_a_missing_prompt_is_named_with_the_fix(recipe):
    _edit(recipe, "write_rr", prompt="prompts/nope.yaml")
    with pytest.raises(
        ParamsError, match=r"write_rr\.prompt: file 'prompts/nope\.yaml' does not exist; create it"
    ):
        validate_recipe(recipe)


def test_a_prompt_without_a_name_fails_naming_the_file(recipe):
    (recipe / "prompts" / "ask.yaml").write_text(ASK.format(name="x").replace("name: x\n", ""))
    with pytest.raises(ParamsError, match=r"write_rr\.prompt: .*ask\.yaml: 'name' is missing"):
        validate_recipe(recipe)


def test_a_prompt_with_no_offline_handler_fails_before_work(recipe):
    (recipe / "prompts" / "ask.yaml").write_text(ASK.format(name="haiku_writer"))
    with pytest.raises(ParamsError) as err:
        validate_recipe(recipe)
    msg = str(err.value)
    assert "write_rr.prompt: prompt 'prompts/ask.yaml' (name: haiku_writer) has no offline handler" in msg
    assert "DISTILL_TEACHER_BASE_URL" in msg  # the fix: a real endpoint, or a handler
    _edit(recipe, "write_rr", teacher_model="gpt-4o-mini")  # a real teacher needs no handler
    validate_recipe(recipe)
    # The stage itself refuses too, before any request, with exit 2.
    _edit(recipe, "write_rr", teacher_model="offline-teacher")
    proc = run(
        [sys.executable, "-m", "dagster_project.stages.synthesize", "--params", "params.yaml", "--section",
         "write_rr", "--input", "missing.parquet", "--out", "out"],
        cwd=recipe, check=False,
    )  # fmt: skip
    assert proc.returncode == 2 and "no offline handler" in proc.stderr and not (recipe / "out").exists()


def test_the_shipped_recipes_are_valid():
    validate_recipe(REPO_ROOT)
    validate_recipe(REPO_ROOT / "examples" / "synthesizrr")
