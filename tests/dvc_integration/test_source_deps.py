"""Files a recipe's params name are deps of the stage that reads them: the root recipe's retrieve deps
come from `retrieve.sources[0].path` and `retrieve.queries`, so repointing them needs no dvc.yaml edit
and an edit of the new file makes retrieve stale; a source the stage does not declare is an error naming
the key and the fix, before any work."""

import json

import pytest
import yaml
from helpers import copy_repo, dvc

from dagster_project.params_schema import ParamsError, validate_recipe


def _status(root) -> dict:
    return json.loads(dvc("status", "dvc.yaml:retrieve", "--json", cwd=root).stdout or "{}")


def test_repointed_sources_are_deps_and_an_undeclared_one_is_named_with_the_fix(tmp_path):
    root = copy_repo(tmp_path / "repo")
    dvc("init", "-q", "-f", cwd=root)
    (root / "data/mine").mkdir(parents=True)
    new, extra = root / "data/mine/passages.jsonl", root / "data/mine/more.jsonl"
    new.write_text(json.dumps({"id": "p1", "text": "Ostra is a river town."}) + "\n")
    extra.write_text(json.dumps({"id": "p9", "text": "Ostra has a mill."}) + "\n")
    (root / "data/mine/queries.txt").write_text("Ostra\n")
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["retrieve"]["sources"][0]["path"] = "data/mine/passages.jsonl"
    params["retrieve"]["queries"] = "data/mine/queries.txt"
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    validate_recipe(root)  # all README asks: repoint the params; the deps follow

    # Record retrieve as built (an output in place), then edit the new source: retrieve is stale.
    (root / "assets/corpus").mkdir(parents=True)
    (root / "assets/corpus/passages.parquet").write_text("built")
    dvc("commit", "-f", "-q", "dvc.yaml:retrieve", cwd=root)
    assert _status(root) == {}
    new.write_text(new.read_text() + json.dumps({"id": "p2", "text": "Ostra has a bridge."}) + "\n")
    assert "data/mine/passages.jsonl" in json.dumps(_status(root)["retrieve"])

    # A second source is not in the templated deps: named with the dep to add, before any work.
    params["retrieve"]["sources"].append({"path": "data/mine/more.jsonl", "format": "jsonl"})
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    with pytest.raises(ParamsError) as err:
        validate_recipe(root)
    message = str(err.value)
    assert "retrieve.sources.1.path: 'data/mine/more.jsonl' is read by stage 'retrieve'" in message
    assert "add `- data/mine/more.jsonl` to the deps of stage 'retrieve'" in message
    dvc_yaml = yaml.safe_load((root / "dvc.yaml").read_text())
    dvc_yaml["stages"]["retrieve"]["deps"].append("data/mine/more.jsonl")
    (root / "dvc.yaml").write_text(yaml.safe_dump(dvc_yaml, sort_keys=False))
    validate_recipe(root)
