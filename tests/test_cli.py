"""`distill recipes`, `distill check --recipe` and `distill demo --recipe` on a repo with several recipes."""

import sys
from pathlib import Path

import pytest
from helpers import executed, make_multi_recipe_repo, run


def distill(*args: str, cwd: Path, check: bool = True):
    return run([sys.executable, "-m", "dagster_project.cli", *args], cwd=cwd, check=check)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_multi_recipe_repo(tmp_path / "repo", broken=True)


def test_recipes_lists_every_recipe_and_names_the_broken_ones(repo):
    proc = distill("recipes", "--project", str(repo), cwd=repo.parent, check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    rows = {line.split()[0]: line.split()[1:] for line in proc.stdout.splitlines()[1:6]}
    assert rows == {
        "default": ["dvc.yaml", "5", "OK"],
        "alpha": ["examples/alpha/dvc.yaml", "3", "OK"],
        "badparams": ["examples/badparams/dvc.yaml", "-", "error"],
        "beta": ["examples/beta/dvc.yaml", "3", "OK"],
        "broken": ["examples/broken/dvc.yaml", "-", "error"],
    }
    assert "recipe broken: examples/broken/dvc.yaml: DVC cannot read it" in proc.stdout
    assert "recipe badparams: examples/badparams/dvc.yaml: invalid params" in proc.stdout
    assert "retrieve.top_kk: unknown key" in proc.stdout


def test_check_one_recipe_or_all(repo):
    assert distill("check", "--recipe", "alpha", cwd=repo).stdout.strip() == "recipe alpha: params ok"
    bad = distill("check", "--recipe", "badparams", cwd=repo, check=False)
    assert bad.returncode == 2 and "recipe badparams" in bad.stderr and "retrieve.top_kk" in bad.stderr
    every = distill("check", cwd=repo, check=False)
    assert every.returncode == 2 and "recipe beta: params ok" in every.stdout
    assert "recipe broken" in every.stderr and "recipe badparams" in every.stderr
    unknown = distill("check", "--recipe", "nope", cwd=repo, check=False)
    assert unknown.returncode == 2 and "no recipe 'nope'" in unknown.stderr


def test_demo_builds_one_recipe_and_prints_its_metrics(repo):
    proc = distill("demo", "--recipe", "alpha", cwd=repo / "examples")  # from a folder inside the repo
    assert sorted(executed(repo / "examples/alpha")) == ["retrieve", "synthesize"]
    assert not (repo / "dvc.lock").exists() and not (repo / "examples/beta/dvc.lock").exists()
    assert (repo / "examples/alpha/dvc.lock").exists()
    assert "metrics: examples/alpha/assets/score/metrics.json" in proc.stdout
    text = (repo / "examples/alpha/assets/synthesized/examples.txt").read_text()
    assert f"chars: {len(text)}" in proc.stdout and f"lines: {text.count(chr(10))}" in proc.stdout

    # Without the unreadable recipe, `dvc repro <dvc.yaml>` builds the recipe in one command.
    run(["git", "rm", "-rqf", "examples/broken"], cwd=repo)
    proc = distill("demo", cwd=repo)  # default: the root recipe
    assert "recipe default: dvc repro dvc.yaml" in proc.stdout
    assert executed(repo) == ["retrieve", "synthesize", "dedup", "train", "evaluate"]
    assert "metrics: assets/eval_report/metrics.json" in proc.stdout and "k: 5" in proc.stdout
    again = distill("demo", "--recipe", "alpha", cwd=repo)
    assert executed(repo / "examples/alpha") == [] and "chars:" in again.stdout


def test_demo_refuses_a_broken_recipe(repo):
    proc = distill("demo", "--recipe", "badparams", cwd=repo, check=False)
    assert proc.returncode == 2 and "retrieve.top_kk" in proc.stderr
    assert not (repo / "examples/badparams/assets").exists()
