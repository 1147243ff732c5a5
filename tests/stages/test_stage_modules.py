"""Stage modules are Dagster-free: each runs as `python -m ...` with Dagster never imported."""

import subprocess
import sys

import pytest
import yaml
from helpers import REPO_ROOT

STAGES = list(yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"])


@pytest.mark.parametrize("stage", STAGES)
def test_stage_module_imports_no_dagster(stage):
    code = (
        f"import sys, dagster_project.stages.{stage} as m; "
        "bad = sorted(n for n in sys.modules if n == 'dagster' or n.startswith(('dagster.', 'dagster_')) "
        "and not n.startswith('dagster_project')); print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, f"{stage} imports Dagster: {proc.stdout}{proc.stderr}"


@pytest.mark.parametrize("stage", STAGES)
def test_stage_cmd_runs_its_own_module(stage):
    cmd = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"][stage]["cmd"]
    assert f"-m dagster_project.stages.{stage} " in cmd
