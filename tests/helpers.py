"""Shared fixtures: small git+DVC repos in tmp_path that look like a recipe, and a dvc runner."""

import os
import re
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO_ROOT / "test-artifacts"


def synthesize_recipe_params(root: Path, **synthesize: object) -> None:
    """Write `root/params.yaml`: the repo's params with placeholder query, passage and gold files in `root`
    and the grounded-QA prompt, plus `synthesize` overrides."""
    import yaml

    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    for name in ("queries.txt", "gold.jsonl", "passages.jsonl"):
        (root / name).write_text("x\n")
    params["retrieve"]["queries"] = str(root / "queries.txt")
    params["retrieve"]["sources"][0]["path"] = str(root / "passages.jsonl")
    params["evaluate"]["gold_test"] = str(root / "gold.jsonl")
    params["synthesize"]["prompt"] = str(REPO_ROOT / "prompts" / "grounded_qa.yaml")
    params["synthesize"].update(synthesize)
    (root / "params.yaml").write_text(yaml.safe_dump(params))


os.environ.setdefault("DVC_NO_ANALYTICS", "1")


# Flags Debian's Chromium needs on a closed network (without them it stalls; docs/known-traps.md).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def system_chromium() -> str:
    """Path of Debian's chromium; skips the test locally without it, fails it in CI (CI set)."""
    return system_binary("chromium", "chromium-browser", install="apt-get install chromium")


def render_report_page(page_path: Path, screenshot: Path) -> dict:
    """Open a report.html in headless Chromium; return its charts' boxes, the bar and matrix-cell counts
    and the body text, after saving a full-page screenshot to `screenshot`."""
    chromium = system_chromium()
    from playwright.sync_api import sync_playwright

    screenshot.parent.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.goto(page_path.as_uri(), wait_until="load")
            seen = {
                "boxes": [svg.bounding_box() for svg in page.locator("svg.chart").all()],
                "bars": page.locator("svg.chart rect.bar").count(),
                "cells": page.locator("svg.chart rect.cell").count(),
                "text": page.inner_text("body"),
            }
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    return seen


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["DVC_NO_ANALYTICS"] = "1"
    env.setdefault("GIT_AUTHOR_NAME", "test")
    env.setdefault("GIT_AUTHOR_EMAIL", "test@example.com")
    env.setdefault("GIT_COMMITTER_NAME", "test")
    env.setdefault("GIT_COMMITTER_EMAIL", "test@example.com")
    return env


def run(cmd: list[str], cwd: Path, check: bool = True, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run a command with this interpreter's bin dir first on PATH; fail with its output."""
    proc = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def dvc(*args: str, cwd: Path, check: bool = True, timeout: int = 600) -> subprocess.CompletedProcess:
    return run([str(Path(sys.executable).parent / "dvc"), *args], cwd=cwd, check=check, timeout=timeout)


def commit_dvc_repo(root: Path, message: str) -> Path:
    """Make the files under `root` a git+DVC repo (analytics off) with everything in one commit."""
    run(["git", "init", "-q"], cwd=root)
    dvc("init", "-q", cwd=root)
    dvc("config", "core.analytics", "false", cwd=root)
    run(["git", "add", "-A"], cwd=root)
    run(["git", "commit", "-qm", message], cwd=root)
    return root


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def system_binary(*names: str, install: str) -> str:
    """Path of the first of `names` on PATH; skips the test locally without it, fails it in CI (CI set),
    saying `install` (how .ci/run installs it)."""
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    message = f"Debian's {names[0]} is not installed (.ci/run installs it: {install})"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


# A recipe-shaped pipeline whose stages are cheap: each reads its inputs and its params section,
# writes its output folder, and appends its name to runs.log so tests count what really executed.
STEPS_PY = """
import json, pathlib, sys, time, yaml

stage = sys.argv[1]
params = yaml.safe_load(open("params.yaml"))[stage]
with open("runs.log", "a") as log:
    log.write(stage + "\\n")
time.sleep(params.get("sleep", 0))  # a slow stage, for tests that stop a run

def read(path):
    p = pathlib.Path(path)
    if not p.is_dir():
        return p.read_text()
    return "".join(f.read_text() for f in sorted(p.rglob("*")) if f.is_file())

def write(path, text):
    p = pathlib.Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)

if stage == "retrieve":
    write("assets/corpus/chunks.txt", read("data/source.txt") * params["repeat"])
elif stage == "synthesize":
    write("assets/synthesized/examples.txt", read("assets/corpus").upper() + params["suffix"])
elif stage == "dedup":
    # `comment` is a declared param that does not change the output bytes.
    lines = sorted(set(read("assets/synthesized").splitlines()))
    write("assets/deduped/train.txt", "\\n".join(lines[: params["keep"]]))
elif stage == "train":
    write("assets/student/model.txt", f"lr={params['lr']}\\n" + read("assets/deduped"))
elif stage == "evaluate":
    text = read("assets/student")
    write("assets/eval_report/report.md", "# report\\n" + text[:40])
    write("assets/eval_report/metrics.json", json.dumps({"chars": len(text), "k": params["k"]}))
"""

DVC_YAML = """
stages:
  retrieve:
    cmd: python steps.py retrieve
    deps: [steps.py, data/source.txt]
    params: [retrieve]
    outs: [assets/corpus]
    meta:
      dagster:
        group: data
        description: Passages.
  synthesize:
    cmd: python steps.py synthesize
    deps: [steps.py, assets/corpus]
    params: [synthesize]
    outs: [assets/synthesized]
    meta: {dagster: {group: data}}
  dedup:
    cmd: python steps.py dedup
    deps: [steps.py, assets/synthesized]
    params: [dedup]
    outs: [assets/deduped]
    meta: {dagster: {group: data}}
  train:
    cmd: python steps.py train
    deps: [steps.py, assets/deduped]
    params: [train]
    outs: [assets/student]
    meta: {dagster: {group: model}}
  evaluate:
    cmd: python steps.py evaluate
    deps: [steps.py, assets/student, assets/deduped]
    params: [evaluate]
    outs: [assets/eval_report/report.md]
    metrics: [assets/eval_report/metrics.json]
    meta: {dagster: {group: model}}
"""

PARAMS_YAML = """
retrieve: {repeat: 2}
synthesize: {suffix: "!"}
dedup: {keep: 3, comment: first}
train: {lr: 0.1}
evaluate: {k: 5}
"""


@pytest.fixture
def fixture_repo(tmp_path: Path) -> Path:
    """A committed git+DVC repo with the five-stage recipe shape and cheap stages."""
    root = tmp_path / "recipe"
    (root / "data").mkdir(parents=True)
    (root / "steps.py").write_text(STEPS_PY)
    (root / "dvc.yaml").write_text(textwrap.dedent(DVC_YAML))
    (root / "params.yaml").write_text(textwrap.dedent(PARAMS_YAML))
    (root / "data" / "source.txt").write_text("alpha beta\ngamma delta\nepsilon\n")
    (root / ".gitignore").write_text("runs.log\n")
    return commit_dvc_repo(root, "recipe")


def executed(root: Path) -> list[str]:
    """The stages that actually executed since the last call (read from and then clear runs.log)."""
    log = root / "runs.log"
    names = log.read_text().split() if log.exists() else []
    log.write_text("")
    return names


def set_param(root: Path, section: str, key: str, value) -> None:
    import yaml

    path = root / "params.yaml"
    data = yaml.safe_load(path.read_text())
    data[section][key] = value
    path.write_text(yaml.safe_dump(data, sort_keys=False))


# ---------------------------------------------------------------------------------------------------
# Several recipes in one repo: the root recipe above plus examples/alpha and examples/beta (cheap stages).

# alpha reuses the root's steps.py from its own folder (a dep outside the recipe: `../../steps.py`) and
# adds a stage writing a metrics file.
ALPHA_SCORE = (
    "import json, pathlib; t = pathlib.Path('assets/synthesized/examples.txt').read_text(); "
    "pathlib.Path('assets/score').mkdir(exist_ok=True); "
    "pathlib.Path('assets/score/metrics.json')"
    ".write_text(json.dumps({'chars': len(t), 'lines': t.count(chr(10))}))"
)
ALPHA_DVC = {
    "stages": {
        "retrieve": {
            "cmd": "python ../../steps.py retrieve",
            "deps": ["../../steps.py", "data/source.txt"],
            "params": ["retrieve"],
            "outs": ["assets/corpus"],
            "meta": {"dagster": {"description": "Alpha's passages.", "owners": ["team:alpha"]}},
        },
        "synthesize": {
            "cmd": "python ../../steps.py synthesize",
            "deps": ["../../steps.py", "assets/corpus"],
            "params": ["synthesize"],
            "outs": ["assets/synthesized"],
        },
        "score": {
            "cmd": f'python -c "{ALPHA_SCORE}"',
            "deps": ["assets/synthesized"],
            "metrics": ["assets/score/metrics.json"],
        },
    }
}
ALPHA_PARAMS = {"retrieve": {"repeat": 3}, "synthesize": {"suffix": "?"}}

# beta: a foreach over params (DVC resolves `${}`), stage names with `@`; the shards are in the pool
# `teacher`, so each is a step of its own and the recipe's job runs them side by side.
BETA_CORPUS = (
    "import pathlib; p = pathlib.Path('assets/corpus'); p.mkdir(parents=True, exist_ok=True); "
    "(p / 'c.txt').write_text(pathlib.Path('data/in.txt').read_text().upper())"
)
BETA_SHARD = (
    "import pathlib; p = pathlib.Path('assets/shard_${item}'); p.mkdir(parents=True, exist_ok=True); "
    "(p / 's.txt').write_text(pathlib.Path('assets/corpus/c.txt').read_text() * ${item})"
)
BETA_DVC = {
    "stages": {
        "corpus": {"cmd": f'python -c "{BETA_CORPUS}"', "deps": ["data/in.txt"], "outs": ["assets/corpus"]},
        "shard": {
            "foreach": "${shards}",
            "do": {
                "cmd": f'python -c "{BETA_SHARD}"',
                "deps": ["assets/corpus"],
                "outs": ["assets/shard_${item}"],
                "meta": {"dagster": {"pool": "teacher", "concurrency": 2}},
            },
        },
    }
}
BETA_PARAMS = {"shards": [1, 2]}

# A dvc.yaml DVC cannot parse, and a recipe whose params do not validate against its stage kind.
BROKEN_DVC_YAML = "stages:\n  oops: [\n"
BAD_PARAMS_DVC = {
    "stages": {
        "retrieve": {
            "cmd": "python -m dagster_project.stages.retrieve --params params.yaml --out assets/corpus",
            "params": ["retrieve"],
            "outs": ["assets/corpus"],
        }
    }
}
BAD_PARAMS = {"retrieve": {"top_kk": 3}}


def write_recipe(
    folder: Path, dvc_yaml: dict | str, params: dict | None = None, data: dict | None = None
) -> None:
    """Write a recipe folder: dvc.yaml (a mapping, or raw text), params.yaml and small data files."""
    import yaml

    folder.mkdir(parents=True, exist_ok=True)
    text = dvc_yaml if isinstance(dvc_yaml, str) else yaml.safe_dump(dvc_yaml, sort_keys=False)
    (folder / "dvc.yaml").write_text(text)
    if params is not None:
        (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for name, content in (data or {}).items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(content)


def make_multi_recipe_repo(root: Path, broken: bool = False) -> Path:
    """A committed git+DVC repo at `root` with three recipes: the root (`default`, the five-stage shape
    of `fixture_repo`), `examples/alpha` and `examples/beta`; with `broken`, also `examples/broken`
    (unparseable dvc.yaml) and `examples/badparams` (params its stage kind rejects)."""
    (root / "data").mkdir(parents=True)
    (root / "steps.py").write_text(STEPS_PY)
    (root / "dvc.yaml").write_text(textwrap.dedent(DVC_YAML))
    (root / "params.yaml").write_text(textwrap.dedent(PARAMS_YAML))
    (root / "data" / "source.txt").write_text("alpha beta\ngamma delta\nepsilon\n")
    (root / ".gitignore").write_text("runs.log\n")
    write_recipe(root / "examples/alpha", ALPHA_DVC, ALPHA_PARAMS, {"data/source.txt": "one two\nthree\n"})
    write_recipe(root / "examples/beta", BETA_DVC, BETA_PARAMS, {"data/in.txt": "beta text\n"})
    if broken:
        write_recipe(root / "examples/broken", BROKEN_DVC_YAML)
        write_recipe(root / "examples/badparams", BAD_PARAMS_DVC, BAD_PARAMS)
    return commit_dvc_repo(root, "recipes")


def copy_repo(dest: Path, drop_locks: bool = True) -> Path:
    """The repo as a fresh clone would see it (tracked and untracked-but-not-ignored files), committed in
    a new git repo at `dest`; every recipe's dvc.lock dropped unless `drop_locks` is false."""
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    for rel in filter(None, files):
        src = REPO_ROOT / rel
        if src.is_file() and not (drop_locks and src.name == "dvc.lock"):
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    run(["git", "init", "-q"], cwd=dest)
    run(["git", "add", "-A"], cwd=dest)
    run(["git", "commit", "-qm", "copy"], cwd=dest)
    return dest


def stages_ran(output: str, recipe: str) -> set[str]:
    """The stages DVC executed (from `dvc repro` output), each checked to belong to `recipe`, by name."""
    addresses = set(re.findall(r"Running stage '([^']+)'", output))
    prefix = f"{recipe}/dvc.yaml:"
    assert all(a.startswith(prefix) for a in addresses), sorted(addresses)  # no other recipe's stage ran
    return {a.removeprefix(prefix) for a in addresses}
