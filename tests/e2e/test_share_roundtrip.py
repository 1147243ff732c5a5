"""Push from one clone, pull into a fresh one against a real S3 endpoint (moto), rebuild nothing.

The pipeline runs the real stage kinds (synthesize against an OpenAI-compatible teacher server that counts
the requests it serves, dedup, train a tiny student). Everything the test claims is counted: the teacher
server's request count, the stages `dvc repro` ran, the synthesize stage's own cache counters.
"""

import json
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from helpers import REPO_ROOT, dvc, run
from moto_s3 import isolate_aws_env, s3_server  # noqa: F401
from tiny_recipe import TINY_TRAIN

from dagster_project import sharing
from dagster_project.stages.common import read_run_facts
from dagster_project.teacher.server import serve_in_thread

pytestmark = pytest.mark.slow

DVC_YAML = """\
stages:
  synthesize:
    cmd: python -m dagster_project.stages.synthesize --params params.yaml --input data/passages.jsonl --out assets/synthesized
    deps: [data/passages.jsonl, prompts/grounded_qa.yaml]
    params: [synthesize]
    outs: [assets/synthesized]
  dedup:
    cmd: python -m dagster_project.stages.dedup --params params.yaml --synthesized assets/synthesized --gold data/gold.jsonl --out assets/deduped
    deps: [assets/synthesized, data/gold.jsonl]
    params: [dedup]
    outs: [assets/deduped]
  train:
    cmd: python -m dagster_project.stages.train --params params.yaml --data assets/deduped --out assets/student
    deps: [assets/deduped/train.parquet, assets/deduped/val.parquet]
    params: [train]
    outs: [assets/student]
"""  # noqa: E501


def dagster_fresh_after_sensor(root: Path, home: Path) -> dict[str, bool]:
    """One tick of the reconciling sensor over `root` in a new instance, then whether each asset is fresh."""
    import dagster as dg
    from dagster._core.definitions.data_version import StaleStatus
    from dagster._utils.test.data_versions import get_stale_status_resolver

    from dagster_project.dvc_integration import build_dvc_assets, build_dvc_lock_sensor

    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        result = build_dvc_lock_sensor(root)(dg.build_sensor_context(instance=instance))
        for event in [] if isinstance(result, dg.SkipReason) else result.asset_events:
            instance.report_runless_asset_event(event)
        assets = build_dvc_assets(root)
        resolver = get_stale_status_resolver(instance, assets)
        return {
            key.to_user_string(): resolver.get_status(key) == StaleStatus.FRESH
            and instance.get_latest_materialization_event(key) is not None
            for asset in assets
            for key in asset.keys
        }


def ran(output: str) -> set[str]:
    """The stages a `dvc repro` of the root dvc.yaml executed, from its output."""
    return set(re.findall(r"Running stage '([^']+)'", output))


def _recipe(root: Path) -> None:
    """A three-stage recipe over six demo-world passages, with this repo's .gitignore."""
    (root / "data").mkdir(parents=True)
    (root / "prompts").mkdir()
    shutil.copy(REPO_ROOT / "prompts/grounded_qa.yaml", root / "prompts/grounded_qa.yaml")
    passages = (REPO_ROOT / "data/demo_world/passages.jsonl").read_text().splitlines()[:6]
    rows = [json.loads(line) for line in passages]
    (root / "data/passages.jsonl").write_text(
        "".join(json.dumps({"passage_id": r["id"], "text": r["text"]}) + "\n" for r in rows)
    )
    gold = (REPO_ROOT / "data/demo_world/gold_test.jsonl").read_text().splitlines()[:3]
    (root / "data/gold.jsonl").write_text("\n".join(gold) + "\n")
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    params = {"synthesize": params["synthesize"], "dedup": params["dedup"], "train": dict(TINY_TRAIN)}
    params["synthesize"]["constants"] = {"count": 4}
    params["dedup"]["val_fraction"] = 0.2
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (root / "dvc.yaml").write_text(textwrap.dedent(DVC_YAML))
    (root / ".gitignore").write_text((REPO_ROOT / ".gitignore").read_text() + "__pycache__/\n")


def test_push_then_pull_into_a_fresh_clone_rebuilds_nothing(
    tmp_path,
    monkeypatch,
    s3_server,  # noqa: F811
):
    isolate_aws_env(monkeypatch, tmp_path)
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    # Relative: each clone's own .cache/teacher (stages run in the recipe folder).
    monkeypatch.setenv("DISTILL_TEACHER_CACHE_DIR", ".cache/teacher")
    monkeypatch.setenv("DISTILL_TRAIN_CHECKPOINTS", str(tmp_path / "checkpoints"))
    monkeypatch.delenv("DISTILL_TEACHER_CACHE_MODE", raising=False)
    origin = tmp_path / "origin"
    _recipe(origin)
    run(["git", "init", "-q"], cwd=origin)
    dvc("init", "-q", cwd=origin)
    dvc("remote", "add", "-d", "shared", f"s3://{s3_server.bucket}/roundtrip", cwd=origin)
    dvc("remote", "modify", "shared", "endpointurl", s3_server.endpoint, cwd=origin)
    run(["git", "add", "-A"], cwd=origin)
    run(["git", "commit", "-qm", "recipe"], cwd=origin)

    with serve_in_thread() as url:
        monkeypatch.setenv("DISTILL_TEACHER_BASE_URL", url)
        built = dvc("repro", cwd=origin)
        assert ran(built.stdout) == {"synthesize", "dedup", "train"}
        teacher_calls_build = url.stats["requests"]
        assert teacher_calls_build > 0
        # Share the teacher cache as its own tracked folder, commit, push with the plain wrapper.
        dvc("add", ".cache/teacher", cwd=origin)
        run(["git", "add", "-A"], cwd=origin)
        run(["git", "commit", "-qm", "built"], cwd=origin)
        assert "pushed to shared" in sharing.push(origin)
        uploaded = s3_server.keys("roundtrip/")
        assert any(k.startswith("roundtrip/runs/") for k in uploaded)  # the run cache went too

        clone = tmp_path / "clone"
        run(["git", "clone", "-q", str(origin), str(clone)], cwd=tmp_path)
        # Nothing but git's own files: no output, no teacher cache before the pull.
        in_git = {"assets/.gitignore"}
        files = {str(p.relative_to(clone)) for p in (clone / "assets").rglob("*") if p.is_file()}
        assert files <= in_git and not (clone / ".cache/teacher").exists(), files
        sharing.pull(clone)
        for rel in ("assets/synthesized/examples.parquet", "assets/student/model.safetensors"):
            assert (clone / rel).read_bytes() == (origin / rel).read_bytes(), rel
        assert sorted(p.name for p in (clone / ".cache/teacher").iterdir()) == sorted(
            p.name for p in (origin / ".cache/teacher").iterdir()
        )

        rebuilt = dvc("repro", cwd=clone)
        assert ran(rebuilt.stdout) == set(), rebuilt.stdout  # nothing recomputed, nothing trained
        assert url.stats["requests"] == teacher_calls_build  # zero teacher calls
        assert "up to date" in dvc("status", cwd=clone).stdout.lower()
        # Dagster agrees: the reconciling sensor records every pulled asset and each one is fresh.
        fresh = dagster_fresh_after_sensor(clone, tmp_path / "dagster_home")
        assert fresh and all(fresh.values()), fresh

        # The pulled teacher cache answers a rerun of synthesis by itself: zero calls, every request a hit.
        out = tmp_path / "resynthesized"
        subprocess.run(
            [sys.executable, "-m", "dagster_project.stages.synthesize", "--params", "params.yaml",
             "--input", "data/passages.jsonl", "--out", str(out)],
            cwd=clone, check=True, capture_output=True, text=True,
        )  # fmt: skip
        stats = json.loads((out / "stats.json").read_text()) | read_run_facts(out)["stats.json"]
        assert stats["calls"] == 0 and stats["cache_hits"] == stats["n_requests"] > 0
        assert url.stats["requests"] == teacher_calls_build
    print(
        f"round trip: build {teacher_calls_build} teacher requests, 3 stages; clone: 0 stages, "
        f"0 teacher requests, {len(uploaded)} objects on the remote"
    )
