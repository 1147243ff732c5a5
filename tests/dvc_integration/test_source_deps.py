"""Files a recipe's params name are deps of the stage that reads them, checked before any work: repointing
`retrieve.sources` at a file the stage does not declare is an error naming the key and the fix, and once
declared, editing that file makes the stage stale."""

import json

import pytest
import yaml
from helpers import copy_repo, dvc

from dagster_project.params_schema import ParamsError, validate_recipe


def test_a_source_outside_the_stage_deps_is_named_with_the_fix_and_once_declared_it_invalidates(tmp_path):
    root = copy_repo(tmp_path / "repo")
    dvc("init", "-q", "-f", cwd=root)
    (root / "data/mine").mkdir(parents=True)
    new = root / "data/mine/passages.jsonl"
    new.write_text(json.dumps({"id": "p1", "text": "Ostra is a river town."}) + "\n")
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["retrieve"]["sources"][0]["path"] = "data/mine/passages.jsonl"
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    with pytest.raises(ParamsError) as err:
        validate_recipe(root)
    message = str(err.value)
    assert "retrieve.sources.0.path" in message and "'data/mine/passages.jsonl'" in message
    assert "add `- data/mine/passages.jsonl` to the deps of stage 'retrieve'" in message

    dvc_yaml = yaml.safe_load((root / "dvc.yaml").read_text())
    dvc_yaml["stages"]["retrieve"]["deps"].append("data/mine/passages.jsonl")
    (root / "dvc.yaml").write_text(yaml.safe_dump(dvc_yaml, sort_keys=False))
    validate_recipe(root)  # declared: valid

    # Record retrieve as built (an output in place), then edit the new source: retrieve is stale.
    (root / "assets/corpus").mkdir(parents=True)
    (root / "assets/corpus/passages.parquet").write_text("built")
    dvc("commit", "-f", "-q", "dvc.yaml:retrieve", cwd=root)
    assert "retrieve" not in json.loads(dvc("status", "dvc.yaml:retrieve", "--json", cwd=root).stdout or "{}")
    new.write_text(new.read_text() + json.dumps({"id": "p2", "text": "Ostra has a bridge."}) + "\n")
    status = json.loads(dvc("status", "dvc.yaml:retrieve", "--json", cwd=root).stdout or "{}")
    assert "data/mine/passages.jsonl" in json.dumps(status["retrieve"]), status
