"""Loading Dagster's definitions (what the webserver, the code server and every UI reload pay) imports
only what building the asset specs needs: DVC's repo (its index), Dagster, the params models -- not the
student's or the teacher's libraries."""

import subprocess
import sys

from helpers import REPO_ROOT

HEAVY = ("torch", "transformers", "trl", "datasets", "openai", "bm25s", "scipy", "sklearn")


def test_definitions_load_imports_no_heavy_library():
    code = (
        "import sys, dagster_project.definitions as d; "
        f"bad = sorted(n for n in {HEAVY!r} if n in sys.modules); "
        "assert d.defs.resolve_asset_graph().get_all_asset_keys(); print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, (
        f"heavy imports on the definitions-load path: {proc.stdout}{proc.stderr[-2000:]}"
    )
