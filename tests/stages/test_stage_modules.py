"""Stage kinds are Dagster-free and light to import; every recipe's stages run kinds with typed params."""

import subprocess
import sys

import pytest
import yaml
from helpers import REPO_ROOT

from dagster_project.params_schema import StageParams, kind_params, kind_uses

KINDS = sorted(
    p.stem
    for p in (REPO_ROOT / "dagster_project" / "stages").glob("*.py")
    if p.stem not in ("__init__", "common")
)
RECIPES = [REPO_ROOT, *sorted(p.parent for p in (REPO_ROOT / "examples").glob("*/dvc.yaml"))]


@pytest.mark.parametrize("kind", KINDS)
def test_stage_kind_imports_neither_dagster_nor_torch(kind):
    """Params validation (Dagster's definitions load, `distill check`) imports every kind's module."""
    code = (
        f"import sys, dagster_project.stages.{kind} as m; "
        "bad = sorted(n for n in sys.modules if n in ('dagster', 'torch', 'transformers') "
        "or n.startswith(('dagster.', 'dagster_')) and not n.startswith('dagster_project')); "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, f"{kind} imports a heavy or Dagster module: {proc.stdout}{proc.stderr}"


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_owns_a_params_model(kind):
    assert issubclass(kind_params(kind), StageParams)


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_every_stage_of_every_recipe_runs_a_kind_reading_a_section_it_declares(recipe):
    stages = yaml.safe_load((recipe / "dvc.yaml").read_text())["stages"]
    cmds = {name: (s.get("do") or s)["cmd"] for name, s in stages.items()}
    uses = {u.stage: u for u in kind_uses({k: " ".join(v.split()) for k, v in cmds.items()})}
    assert set(uses) == set(cmds), "every stage runs a stage kind"
    for name, use in uses.items():
        assert use.kind in KINDS
        declared = (stages[name].get("do") or stages[name]).get("params", [])
        assert use.section in declared, f"{name} reads {use.section} but declares {declared}"
