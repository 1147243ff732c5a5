"""Read a DVC repo once: every recipe (a folder holding a dvc.yaml), its stages, and their code versions.

Everything Dagster knows about the pipelines is derived here; nothing is written twice:
- the graph comes from DVC's own collection of the repo's dvc.yaml files (`collect_files`, what
  `Repo.index` is built from), which resolves foreach/matrix/${} templating; it is collected per file,
  so one broken dvc.yaml is reported by name and does not hide the others;
- versions come from hashing what DVC itself records (see `versions`).

A recipe is named after its folder: the repo root is `default`, `examples/<name>` is `<name>`, and any
other folder is its path with `/` replaced by `_` (characters other than letters, digits and `_`
become `_` too, so the name is a valid Dagster group and key prefix). Inside this module every path is
relative to the repo root (POSIX), also for recipes in subfolders; `versions.read_lock` converts the
folder-relative paths of each recipe's dvc.lock.
"""

import os
import posixpath
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

DEFAULT_RECIPE = "default"
EXAMPLES_DIR = "examples"


@dataclass(frozen=True)
class DvcStage:
    """One stage of a recipe's dvc.yaml, as DVC resolved it (paths relative to the repo root)."""

    name: str  # as DVC names it: `train`, `train@small` for a foreach/matrix entry
    cmd: str
    deps: tuple[str, ...]  # params files excluded
    outs: tuple[str, ...]  # metrics/plots outputs included
    params: dict[str, tuple[str, ...]]  # params file -> declared keys
    meta: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    upstream: tuple[str, ...] = ()  # names of stages of the same recipe whose outputs this stage reads
    recipe: str = DEFAULT_RECIPE
    dvcfile: str = "dvc.yaml"  # the dvc.yaml that declares it
    wdir: str = "."  # the folder its command runs in (and its dvc.lock paths are relative to)
    metrics: tuple[str, ...] = ()  # the outs declared under `metrics:`

    @property
    def address(self) -> str:
        """How DVC addresses the stage from the repo root: `<dvc.yaml path>:<stage>`."""
        return f"{self.dvcfile}:{self.name}"

    @property
    def dagster_meta(self) -> dict[str, Any]:
        """The `meta.dagster` block: Dagster-only facts DVC ignores for invalidation."""
        return dict((self.meta or {}).get("dagster") or {})


@dataclass(frozen=True)
class Recipe:
    """One folder holding a dvc.yaml: its stages, or the error that kept them from loading."""

    name: str
    folder: str  # relative to the repo root; "." for the root
    stages: tuple[DvcStage, ...] = ()
    code_versions: dict[str, str] = field(default_factory=dict, hash=False, compare=False)
    error: str | None = None
    dvc_readable: bool = (
        True  # False when DVC itself cannot read the dvc.yaml (then `dvc repro` fails repo-wide)
    )

    @property
    def dvc_yaml(self) -> str:
        return posixpath.join(self.folder, "dvc.yaml") if self.folder != "." else "dvc.yaml"

    @property
    def dvc_lock(self) -> str:
        return posixpath.join(self.folder, "dvc.lock") if self.folder != "." else "dvc.lock"

    @property
    def ok(self) -> bool:
        return self.error is None

    def failed(self, error: str) -> "Recipe":
        """This recipe with `error` and no stages (what a broken recipe looks like)."""
        return Recipe(name=self.name, folder=self.folder, error=error, dvc_readable=self.dvc_readable)

    def stage(self, name: str) -> DvcStage:
        """The stage called `name` (KeyError if the recipe has none)."""
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(f"recipe {self.name!r} has no stage {name!r}")


@dataclass(frozen=True)
class DvcProject:
    """Every recipe of the DVC repo at `root`, read from DVC once."""

    root: Path
    recipes: tuple[Recipe, ...]

    @property
    def ok_recipes(self) -> list[Recipe]:
        return [r for r in self.recipes if r.ok]

    @property
    def broken_recipes(self) -> list[Recipe]:
        return [r for r in self.recipes if not r.ok]

    def replace(self, recipe: Recipe) -> "DvcProject":
        """This project with the recipe of the same name replaced by `recipe`."""
        return DvcProject(self.root, tuple(recipe if r.name == recipe.name else r for r in self.recipes))

    def recipe(self, name: str) -> Recipe:
        """The recipe called `name`; KeyError naming the recipes there are."""
        for recipe in self.recipes:
            if recipe.name == name:
                return recipe
        raise KeyError(f"no recipe {name!r}; recipes: {', '.join(r.name for r in self.recipes) or 'none'}")

    @classmethod
    def load(
        cls, root: Path | str, *, validate_params: bool = True, code_versions: bool = True
    ) -> "DvcProject":
        """Read every dvc.yaml of the repo at `root` (see `load_project`)."""
        return load_project(root, validate_params=validate_params, code_versions=code_versions)


def recipe_name(folder: str) -> str:
    """The recipe name of a repo-relative folder: `.` -> `default`, `examples/<name>` -> `<name>`,
    anything else its path with `/` -> `_`; other characters than [A-Za-z0-9_] become `_`."""
    parts = PurePosixPath(folder).parts
    if not parts or parts == (".",):
        return DEFAULT_RECIPE
    if len(parts) == 2 and parts[0] == EXAMPLES_DIR:
        parts = parts[1:]
    return re.sub(r"\W", "_", "_".join(parts))


def _contains(parent: str, child: str) -> bool:
    """Whether `child` is `parent` or lies inside it (repo-relative POSIX paths)."""
    p, c = PurePosixPath(parent), PurePosixPath(child)
    return c == p or p in c.parents


def overlaps(a: str, b: str) -> bool:
    """Whether one path lies inside the other (or they are the same)."""
    return _contains(a, b) or _contains(b, a)


def repo_relative(root: Path, fs_path: str) -> str:
    """`fs_path` relative to the (resolved) repo root, POSIX; absolute when it lies outside the repo."""
    path = Path(fs_path).resolve()
    try:
        return path.relative_to(root).as_posix()
    except ValueError:  # outside the repo: keep it absolute
        return path.as_posix()


def is_params_dep(dep: Any) -> bool:
    """Whether a DVC dependency is a params file (`params:` in dvc.yaml)."""
    return type(dep).__name__ == "ParamsDependency"


def _error_text(exc: BaseException) -> str:
    """DVC's message plus the cause it wraps (e.g. the YAML parser's line and column)."""
    text = str(exc) or type(exc).__name__
    cause = exc.__cause__
    if cause is not None and str(cause) and str(cause) not in text:
        text += f": {cause}"
    return text


def _stages_of(root: Path, recipe: str, dvc_stages: Iterable[Any]) -> list[DvcStage]:
    raw = []
    for stage in dvc_stages:
        if not getattr(stage, "cmd", None):  # .dvc files of `dvc add` are data, not stages
            continue
        params = {
            repo_relative(root, p.fs_path): tuple(p.params or ()) for p in stage.deps if is_params_dep(p)
        }
        deps = tuple(repo_relative(root, d.fs_path) for d in stage.deps if not is_params_dep(d))
        outs = tuple(repo_relative(root, o.fs_path) for o in stage.outs)
        metrics = tuple(repo_relative(root, o.fs_path) for o in stage.outs if getattr(o, "metric", False))
        cmd = stage.cmd if isinstance(stage.cmd, str) else " && ".join(stage.cmd)
        raw.append(
            DvcStage(
                name=stage.name,
                cmd=cmd,
                deps=deps,
                outs=outs,
                params=params,
                meta=dict(stage.meta or {}),
                recipe=recipe,
                dvcfile=repo_relative(root, stage.path),
                wdir=repo_relative(root, stage.wdir) or ".",
                metrics=metrics,
            )
        )
    stages = []
    for s in raw:
        upstream = tuple(
            o.name
            for o in raw
            if o.name != s.name and any(overlaps(out, d) for out in o.outs for d in s.deps)
        )
        stages.append(DvcStage(**{**s.__dict__, "upstream": upstream}))
    return stages


def _collect(repo: Any, root: Path, on_error: Callable[[str, str], None]) -> Iterable[tuple[str, list[Any]]]:
    """(repo-relative dvc.yaml path, its DVC stages) per dvc.yaml, as `Repo.index` collects them; a file
    DVC cannot read is passed to `on_error` with DVC's message and skipped."""
    from dvc.repo.index import collect_files

    def onerror(path: str, exc: Exception) -> None:  # DVC passes the path relative to the cwd
        on_error(repo_relative(root, os.path.abspath(path)), _error_text(exc))

    for path, index in collect_files(repo, onerror=onerror):
        rel = repo_relative(root, path)
        if PurePosixPath(rel).name == "dvc.yaml":
            yield rel, list(index.stages)


def load_project(root: Path | str, *, validate_params: bool = True, code_versions: bool = True) -> DvcProject:
    """Every recipe of the DVC repo at (or above) `root`, its stages resolved by DVC, in folder order
    (the repo root's recipe first).

    A recipe whose dvc.yaml DVC cannot read, or whose params do not validate
    (`params_schema.validate_recipe`), is kept with its `error` and no stages; the others load.
    With `code_versions`, each stage's code version is computed from the workspace now.
    """
    from dvc.repo import Repo

    from dagster_project.dvc_integration.versions import code_versions_from_workspace

    found: dict[str, Recipe] = {}

    def add(folder: str, **kwargs: Any) -> None:
        name = recipe_name(folder)
        other = found.get(name)
        if other is not None and other.folder != folder:
            kwargs = {"error": f"recipe name {name!r} is also the name of the recipe in {other.folder}/"}
            name = re.sub(r"\W", "_", folder)
        found[name] = Recipe(name=name, folder=folder, **kwargs)

    errors: dict[str, str] = {}
    with Repo(str(root)) as repo:
        root = Path(repo.root_dir).resolve()  # `root` may be a folder inside the repo
        for dvc_yaml, dvc_stages in _collect(repo, root, lambda path, msg: errors.setdefault(path, msg)):
            folder = posixpath.dirname(dvc_yaml) or "."
            try:
                stages = _stages_of(root, recipe_name(folder), dvc_stages)
                versions = code_versions_from_workspace(root, stages, dvc_stages) if code_versions else {}
            except Exception as exc:  # a stage DVC resolved but we cannot read: this recipe only
                add(folder, error=f"{dvc_yaml}: {_error_text(exc)}")
                continue
            add(folder, stages=tuple(stages), code_versions=versions)
    for dvc_yaml, message in errors.items():
        folder = posixpath.dirname(dvc_yaml) or "."
        add(folder, error=f"{dvc_yaml}: DVC cannot read it: {message}", dvc_readable=False)
    recipes = sorted(found.values(), key=lambda r: (r.folder != ".", r.folder))
    if validate_params:
        recipes = [_validated(root, r) for r in recipes]
    return DvcProject(root=root, recipes=tuple(recipes))


def stage_maps(recipe: Recipe) -> tuple[dict[str, str], dict[str, tuple[str, ...]]]:
    """(stage -> command, stage -> deps relative to the recipe folder) of a loaded recipe: what
    `params_schema.validate_recipe` checks the params against."""

    def local(dep: str) -> str:
        if posixpath.isabs(dep) or recipe.folder == ".":
            return dep
        return posixpath.relpath(dep, recipe.folder)

    cmds = {s.name: s.cmd for s in recipe.stages}
    return cmds, {s.name: tuple(local(d) for d in s.deps) for s in recipe.stages}


def _validated(root: Path, recipe: Recipe) -> Recipe:
    """The recipe, or the recipe with its params error (and no stages) when its params do not validate."""
    if not recipe.ok or not recipe.stages:
        return recipe
    from dagster_project.params_schema import validate_recipe

    try:
        validate_recipe(root / recipe.folder, *stage_maps(recipe))
    except Exception as exc:  # ParamsError, or a stage kind that fails to import
        return recipe.failed(f"{recipe.dvc_yaml}: invalid params: {exc}")
    return recipe


def asset_folder(stage: DvcStage) -> str:
    """The folder that holds a stage's outputs: the single out dir, or the common parent of its files."""
    if len(stage.outs) == 1:
        out = PurePosixPath(stage.outs[0])
        return out.as_posix() if not out.suffix else out.parent.as_posix()
    common = PurePosixPath(stage.outs[0]).parent
    while not all(_contains(common.as_posix(), o) for o in stage.outs):
        common = common.parent
    return common.as_posix()
