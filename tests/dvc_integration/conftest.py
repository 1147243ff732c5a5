"""Fixtures of the DVC integration tests: a Dagster instance, and repos holding several recipes."""

from pathlib import Path

import dagster as dg
import pytest
from helpers import make_multi_recipe_repo


@pytest.fixture
def instance(tmp_path: Path):
    (tmp_path / "dagster_home").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster_home")) as inst:
        yield inst


@pytest.fixture
def recipes_repo(tmp_path: Path) -> Path:
    """The root recipe (`default`) plus examples/alpha and examples/beta, committed."""
    return make_multi_recipe_repo(tmp_path / "repo")


@pytest.fixture
def broken_recipes_repo(tmp_path: Path) -> Path:
    """`recipes_repo` plus examples/broken (unparseable dvc.yaml) and examples/badparams (invalid params)."""
    return make_multi_recipe_repo(tmp_path / "repo", broken=True)
