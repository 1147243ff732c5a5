"""Every recipe's metrics are in git (`cache: false`): on a fresh clone, with no DVC cache or remote,
`dvc metrics diff` and `dvc exp show` read HEAD's numbers."""

import json

import yaml
from helpers import REPO_ROOT, copy_repo, dvc


def declared_metrics(dvc_yaml) -> list[str]:
    """The `metrics:` outputs a dvc.yaml declares (paths relative to its folder; foreach stages too)."""
    stages = yaml.safe_load(dvc_yaml.read_text())["stages"]
    found = []
    for stage in stages.values():
        stage = stage.get("do", stage)
        for entry in stage.get("metrics", []):
            path, opts = next(iter(entry.items())) if isinstance(entry, dict) else (entry, {})
            assert opts.get("cache") is False, f"{dvc_yaml}: metrics {path} must be `cache: false` (in git)"
            found.append(path)
    return found


def test_every_recipes_metrics_are_declared_uncached():
    recipes = [REPO_ROOT / "dvc.yaml", *sorted(REPO_ROOT.glob("examples/*/dvc.yaml"))]
    assert all(declared_metrics(p) for p in recipes)


def test_a_fresh_clone_diffs_its_metrics_against_head(tmp_path):
    root = copy_repo(tmp_path / "repo", drop_locks=False)
    metrics = root / "assets/eval_report/metrics.json"
    committed = json.loads(metrics.read_text())  # in git, so in the clone
    assert not (root / ".dvc/cache").exists()

    shown = json.loads(dvc("exp", "show", "--json", cwd=root).stdout)
    assert shown and "assets/eval_report/metrics.json" in json.dumps(shown)

    changed = committed | {"headline": {**committed.get("headline", {}), "probe": 1.0}}
    metrics.write_text(json.dumps(changed))
    diff = json.loads(dvc("metrics", "diff", "--json", cwd=root).stdout)
    probe = diff["assets/eval_report/metrics.json"]["headline.probe"]
    assert probe["old"] is None and probe["new"] == 1.0
