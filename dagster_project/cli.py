"""`distill`: the command line of the project. A recipe is a folder holding a dvc.yaml (the repo root is
`default`, examples/<name> is `<name>`).

distill recipes                list every recipe: name, dvc.yaml, number of stages, OK or its error
distill check [--recipe NAME]  validate a recipe's params (default: every recipe) before any work
distill demo [--recipe NAME]   build a recipe with `dvc repro <its dvc.yaml>` (default: `default`)
                               and print its metrics
distill push [--remote NAME]   record a grown teacher cache, then `dvc push --run-cache`; a remote error
                               is one line naming the remote and the fix (dagster_project/sharing.py)
distill pull [--remote NAME]   `dvc pull --run-cache`, errors told the same way
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from dagster_project.dvc_integration.project import (
    DEFAULT_RECIPE,
    DvcProject,
    DvcStage,
    Recipe,
    load_project,
    stage_maps,
)
from dagster_project.dvc_integration.resource import dvc_executable, dvc_subprocess_env
from dagster_project.params_schema import ParamsError, read_params_file, validate_params, validate_recipe

REPORT = Path("assets/eval_report/report.html")  # self-contained (report.md embeds base64 charts)
METRICS = Path("assets/eval_report/metrics.json")  # the default recipe's headline
MAX_NUMBERS = 20


def fail(message: str, code: int = 2) -> None:
    """Print `error: message` to stderr and exit with `code`."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(code)


def _project(root: Path, validate: bool = False) -> DvcProject | None:
    """The DVC repo's recipes (None when `root` is in no DVC repo)."""
    from dvc.exceptions import NotDvcRepoError

    try:
        return load_project(root, validate_params=validate, code_versions=False)
    except NotDvcRepoError:
        return None


def _recipe(project: DvcProject, name: str) -> Recipe:
    try:
        return project.recipe(name)
    except KeyError as exc:
        fail(str(exc.args[0]))
        raise  # unreachable


def _check_recipe(project: DvcProject, recipe: Recipe) -> str | None:
    """The recipe's error (DVC's or the params validator's), or None when its params are valid."""
    if recipe.error:
        return recipe.error
    try:
        validate_recipe(project.root / recipe.folder, *stage_maps(recipe))
    except ParamsError as exc:
        return str(exc)
    return None


def check(root: Path, recipe: str | None = None) -> None:
    """Validate the params of one recipe (or all); exit 2 with messages naming the key or file and the fix."""
    project = _project(root)
    if project is None:  # a lone folder, not a DVC repo: its params.yaml against the kinds it names
        try:
            if (root / "dvc.yaml").exists():
                validate_recipe(root)
            else:
                validate_params(read_params_file(root / "params.yaml"), root)
        except ParamsError as exc:
            fail(str(exc))
        print("params.yaml: ok")
        return
    recipes = [_recipe(project, recipe)] if recipe else list(project.recipes)
    errors = []
    for r in recipes:
        error = _check_recipe(project, r)
        if error:
            errors.append(f"recipe {r.name} ({r.dvc_yaml}): {error}")
        else:
            print(f"recipe {r.name}: params ok")
    if errors:
        fail("\n".join(errors))


def recipes(root: Path) -> None:
    """List every recipe of the repo; exit 1 when one is broken (its error is printed below it)."""
    project = _project(root, validate=True)
    if project is None:
        fail(f"{root} is not in a DVC repo")
        return
    rows = [
        (r.name, r.dvc_yaml, str(len(r.stages)) if r.ok else "-", "OK" if r.ok else "error")
        for r in project.recipes
    ]
    widths = [
        max(len(row[i]) for row in [("recipe", "dvc.yaml", "stages", "status"), *rows]) for i in range(4)
    ]
    for row in [("recipe", "dvc.yaml", "stages", "status"), *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    for r in project.broken_recipes:
        print(f"\nrecipe {r.name}: {r.error}")
    if project.broken_recipes:
        raise SystemExit(1)


def _numbers(obj: Any, prefix: str = "") -> dict[str, float]:
    """The numbers of a JSON document, by dotted path."""
    if isinstance(obj, dict):
        return {k: v for key, val in obj.items() for k, v in _numbers(val, f"{prefix}{key}.").items()}
    if isinstance(obj, int | float) and not isinstance(obj, bool):
        return {prefix.rstrip("."): obj}
    return {}


def print_metrics(root: Path, recipe: Recipe) -> None:
    """The recipe's headline: the default recipe's eval report when it has one, else the numbers of
    every `metrics:` output its dvc.yaml declares."""
    headline = root / METRICS
    if recipe.name == DEFAULT_RECIPE and headline.exists():
        metrics = json.loads(headline.read_text())
        if all(isinstance(metrics.get(s), dict) for s in ("student", "baseline")):
            print(f"metrics: {METRICS}")
            for system in ("zero_shot", "student", "teacher", "baseline"):
                if isinstance(metrics.get(system), dict):
                    em, f1 = (metrics[system].get(k, 0.0) for k in ("exact_match", "token_f1"))
                    print(f"  {system:9s} exact match {em:.3f}  token F1 {f1:.3f}")
            if isinstance(metrics.get("headline"), dict):
                from dagster_project.evaluation.report import headline_line

                print(headline_line(metrics["headline"]))
            if (root / REPORT).exists():
                print(f"eval report: {(root / REPORT).resolve()}")
            return
    paths = [m for s in recipe.stages for m in s.metrics]
    if not paths:
        print(f"recipe {recipe.name} declares no metrics outputs")
    for path in paths:
        print(f"metrics: {path}")
        try:
            numbers = _numbers(json.loads((root / path).read_text()))
        except (OSError, json.JSONDecodeError) as exc:
            print(f"  (unreadable: {exc})")
            continue
        for key in sorted(numbers, key=lambda k: (k.count("."), k))[:MAX_NUMBERS]:
            print(f"  {key}: {numbers[key]:g}")


def topological(recipe: Recipe) -> list[DvcStage]:
    """The recipe's stages, each after the stages it reads from (dvc.yaml order otherwise)."""
    done: dict[str, DvcStage] = {}
    by_name = {s.name: s for s in recipe.stages}

    def visit(stage: DvcStage) -> None:
        if stage.name not in done:
            done[stage.name] = stage  # marked first: a cycle cannot recurse forever (DVC rejects it anyway)
            for up in stage.upstream:
                visit(by_name[up])
            done[stage.name] = done.pop(stage.name)  # move after its upstream

    for stage in recipe.stages:
        visit(stage)
    return list(done.values())


def _dvc(root: Path, *args: str) -> None:
    """Run `dvc <args>` in the repo root, streaming its output; exit with its status on failure."""
    proc = subprocess.run([dvc_executable(), *args], cwd=root, env=dvc_subprocess_env())
    if proc.returncode != 0:
        raise SystemExit(proc.returncode)


def demo(root: Path, recipe: str = DEFAULT_RECIPE) -> None:
    """Build one recipe (only what is stale), then print its headline numbers."""
    project = _project(root)
    if project is None:
        fail(f"{root} is not in a DVC repo")
        return
    r = _recipe(project, recipe)
    error = _check_recipe(project, r)
    if error:
        fail(f"recipe {r.name} ({r.dvc_yaml}): {error}")
    start = time.time()
    unreadable = [b for b in project.recipes if not b.dvc_readable]
    if not unreadable:
        print(f"recipe {r.name}: dvc repro {r.dvc_yaml}", flush=True)
        _dvc(project.root, "repro", r.dvc_yaml)
    else:
        # `dvc repro <dvc.yaml>` reads every dvc.yaml of the repo (to build its graph) and fails on a broken
        # one; `--single-item` does not, so the recipe is built stage by stage in dependency order.
        names = ", ".join(b.dvc_yaml for b in unreadable)
        print(f"recipe {r.name}: DVC cannot read {names}, so its stages run one by one", flush=True)
        for stage in topological(r):
            print(f"dvc repro --single-item {stage.address}", flush=True)
            _dvc(project.root, "repro", "--single-item", stage.address)
    print(f"\nrecipe {r.name} done in {time.time() - start:.0f}s")
    print_metrics(project.root, r)


def share(root: Path, action: str, remote: str | None) -> None:
    """`distill push` / `distill pull` (see dagster_project/sharing.py)."""
    from dagster_project import sharing

    try:
        print(sharing.push(root, remote) if action == "push" else sharing.pull(root, remote))
    except sharing.RemoteError as exc:
        fail(str(exc), exc.code)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `distill` command."""
    parser = argparse.ArgumentParser(
        prog="distill", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("command", choices=["recipes", "check", "demo", "push", "pull"])
    parser.add_argument("--project", default=".", help="the repo root (or a folder inside it)")
    parser.add_argument("--recipe", default=None, help="a recipe name (see `distill recipes`)")
    parser.add_argument("--remote", default=None, help="push/pull: a DVC remote (default: the default one)")
    args = parser.parse_args(argv)
    root = Path(args.project).resolve()
    if args.command == "recipes":
        recipes(root)
    elif args.command == "check":
        check(root, args.recipe)
    elif args.command in ("push", "pull"):
        share(root, args.command, args.remote)
    else:
        demo(root, args.recipe or DEFAULT_RECIPE)


if __name__ == "__main__":
    main()
