"""No-op rebuild cost: bare `dvc repro` vs the same stages through Dagster, in the same run.

    python benchmarks/noop_repro.py [--project .] [--repeats 3]

Builds the pipeline first if anything is stale (not timed), then times, with everything up to date:
- `dvc repro` (bare DVC, all stages);
- materializing all assets through Dagster (each asset runs `dvc --wait-for-lock repro --single-item`);
- materializing one up-to-date asset through Dagster (what the UI's Materialize does, minus the
  webserver's run-launch overhead, which tests/dvc_integration/test_webserver.py prints);
- loading the Dagster definitions (reading DVC's index and hashing deps for code versions).
Prints JSON with medians and ratios against bare DVC.
"""

import argparse
import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import dagster as dg

from dagster_project.dvc_integration import DvcCliResource, build_dvc_assets
from dagster_project.dvc_integration.resource import dvc_executable, dvc_subprocess_env


def timed(fn, repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--project", default=".")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    root = Path(args.project).resolve()

    def dvc_repro() -> None:
        subprocess.run(
            [dvc_executable(), "repro"], cwd=root, env=dvc_subprocess_env(), check=True, capture_output=True
        )

    dvc_repro()  # build whatever is stale; not timed
    bare = timed(dvc_repro, args.repeats)
    load = timed(lambda: build_dvc_assets(root), args.repeats)
    assets = build_dvc_assets(root)
    resources = {"dvc": DvcCliResource(project_dir=str(root))}
    with tempfile.TemporaryDirectory() as home, dg.instance_for_test(temp_dir=home) as instance:
        everything = timed(
            lambda: dg.materialize(assets, instance=instance, resources=resources), args.repeats
        )
        one = timed(
            lambda: dg.materialize(
                assets, selection="key:eval_report", instance=instance, resources=resources
            ),
            args.repeats,
        )
    result = {
        "project": str(root),
        "repeats": args.repeats,
        "bare_dvc_repro_noop_s": round(bare, 3),
        "dagster_materialize_all_noop_s": round(everything, 3),
        "dagster_materialize_one_up_to_date_s": round(one, 3),
        "dagster_definitions_load_s": round(load, 3),
        "ratio_dagster_all_vs_bare_dvc": round(everything / bare, 2),
        "ratio_dagster_one_vs_bare_dvc": round(one / bare, 2),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
