"""Typed params for stage kinds, and the validation of a recipe's params.yaml before any work.

Each stage kind (a module of `dagster_project.stages`) declares its own pydantic model `Params`, a
subclass of `StageParams`, beside its code: every default lives there and nowhere else. A recipe's
params.yaml has one section per stage (the section a stage reads is its `--section`, by default the
kind's name), and is validated against the models of the kinds its dvc.yaml uses (`validate_recipe`).
A stage validates its own section when it starts (`stages.common.load_stage_params`) and receives the
model.

Errors name the key, what is allowed and the fix, e.g.
``params.yaml: dedup.near_treshold: unknown key. did you mean 'near_threshold'?``.

Files a params value names are declared in the model with `DataFile` / `PromptFile` (checked to exist,
relative to the params file's folder); a prompt must also load, carry a `name`, and, when the stage's
`teacher_model` is the offline teacher, have an offline handler.
"""

import difflib
import importlib
import posixpath
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

OFFLINE_TEACHER = "offline-teacher"


class ParamsError(ValueError):
    """params.yaml (or a file it names) is wrong; the message says where and how to fix it."""


class StageParams(BaseModel):
    """Base of every kind's params model: unknown keys are errors, values are not coerced."""

    model_config = ConfigDict(extra="forbid", strict=True)

    def check_files(self, root: Path, section: str) -> list[str]:
        """Problems with the files this section names (relative to `root`); override to add checks."""
        return _check_refs(self, root, section)

    def input_files(self, section: str) -> list[tuple[str, str]]:
        """(key, path) of every data file this section makes its stage read (`DataFile` fields, nested
        sections included); a changed one must make the stage stale, so it must be among its deps.
        Override when a path is declared otherwise (e.g. retrieve's sources)."""
        return _input_refs(self, section)


@dataclass(frozen=True)
class FileRef:
    """Marks a params field as naming a file: `data` (must exist) or `prompt` (must load)."""

    kind: str  # data | prompt


DataFile = Annotated[str, FileRef("data")]
PromptFile = Annotated[str, FileRef("prompt")]


def _file_ref(annotation: Any) -> FileRef | None:
    if get_origin(annotation) is Annotated:
        return next((m for m in get_args(annotation)[1:] if isinstance(m, FileRef)), None)
    for arg in get_args(annotation):  # Optional[DataFile], DataFile | None
        ref = _file_ref(arg)
        if ref:
            return ref
    return None


def _check_refs(model: BaseModel, root: Path, prefix: str) -> list[str]:
    problems: list[str] = []
    for name, info in type(model).model_fields.items():
        value = getattr(model, name)
        key = f"{prefix}.{name}"
        ref = next((m for m in info.metadata if isinstance(m, FileRef)), None) or _file_ref(info.annotation)
        if ref and isinstance(value, str):
            problems += _check_file(ref, value, root, key, model)
        elif ref and isinstance(value, dict | list):  # e.g. files: {label_info: data/labels.yaml}
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for k, v in items:
                if isinstance(v, str):
                    problems += _check_file(ref, v, root, f"{key}.{k}", model)
        elif isinstance(value, StageParams):
            problems += value.check_files(root, key)
        elif isinstance(value, BaseModel):
            problems += _check_refs(value, root, key)
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, StageParams):
                    problems += item.check_files(root, f"{key}.{i}")
                elif isinstance(item, BaseModel):
                    problems += _check_refs(item, root, f"{key}.{i}")
    return problems


def _input_refs(model: BaseModel, prefix: str) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    for name, info in type(model).model_fields.items():
        value, key = getattr(model, name), f"{prefix}.{name}"
        ref = next((m for m in info.metadata if isinstance(m, FileRef)), None) or _file_ref(info.annotation)
        if ref and ref.kind == "data" and isinstance(value, str):
            found.append((key, value))
        elif ref and ref.kind == "data" and isinstance(value, dict | list):
            items = value.items() if isinstance(value, dict) else enumerate(value)
            found += [(f"{key}.{k}", v) for k, v in items if isinstance(v, str)]
        elif isinstance(value, StageParams):
            found += value.input_files(key)
        elif isinstance(value, BaseModel):
            found += _input_refs(value, key)
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, StageParams):
                    found += item.input_files(f"{key}.{i}")
                elif isinstance(item, BaseModel):
                    found += _input_refs(item, f"{key}.{i}")
    return found


def undeclared_inputs(
    model: StageParams, section: str, stage: str, deps: Sequence[str], params_dir: str, source: str
) -> list[str]:
    """Problems: files the section makes stage `stage` read that no dep of it covers (`deps` and
    `params_dir` relative to the recipe folder). Editing such a file would leave the stage up to date."""
    declared = [posixpath.normpath(d) for d in deps]
    problems = []
    for key, value in model.input_files(section):
        path = value if posixpath.isabs(value) else posixpath.normpath(posixpath.join(params_dir, value))
        if any(path == d or path.startswith(d.rstrip("/") + "/") or d == "." for d in declared):
            continue
        problems.append(
            f"{source}: {key}: '{value}' is read by stage '{stage}' but is not among its deps in dvc.yaml, "
            f"so editing it would not make the stage stale; add `- {path}` to the deps of stage '{stage}'."
        )
    return problems


def _check_file(ref: FileRef, value: str, root: Path, key: str, owner: BaseModel) -> list[str]:
    path = root / value
    if not path.exists():
        return [f"{key}: file '{value}' does not exist; create it or point {key} at an existing file."]
    if ref.kind != "prompt":
        return []
    from dagster_project.teacher.offline import has_handler
    from dagster_project.teacher.prompts import PromptError, load_prompt

    try:
        prompt = load_prompt(path)
    except PromptError as exc:
        return [f"{key}: {exc}"]
    if getattr(owner, "teacher_model", None) == OFFLINE_TEACHER and not has_handler(prompt.name):
        return [
            f"{key}: prompt '{value}' (name: {prompt.name}) has no offline handler, and teacher_model is "
            f"{OFFLINE_TEACHER}; set DISTILL_TEACHER_BASE_URL and a real teacher_model, or add a handler "
            "for it (dagster_project/teacher/offline/, see docs/recipes.md)."
        ]
    return []


# --------------------------------------------------------------------------------------------- messages


def _model_at(root_model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model that owns the field at `loc` (the location of an error), if any."""
    model: Any = root_model
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part) if isinstance(model, type) else None
        if field is None:
            return None
        ann = field.annotation
        args = getattr(ann, "__args__", ())
        nested = [a for arg in args for a in getattr(arg, "__args__", ())]
        inner = next(
            (a for a in (ann, *args, *nested) if isinstance(a, type) and issubclass(a, BaseModel)), None
        )
        if inner is None:
            return None
        model = inner
    return model


def _describe(err: dict[str, Any], source: str, model: type[BaseModel], prefix: str) -> str:
    loc = tuple(err["loc"])
    key = ".".join([prefix, *(str(p) for p in loc)]) if loc else prefix
    kind = err["type"]
    if kind == "extra_forbidden":
        owner = _model_at(model, loc)
        allowed = sorted(owner.model_fields) if owner else []
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        hint = f" did you mean '{close[0]}'?" if close else ""
        return f"{source}: {key}: unknown key.{hint} Allowed keys here: {', '.join(allowed)}."
    if kind == "missing":
        return f"{source}: {key}: required key is missing; add it (see README.md, 'params.yaml')."
    if kind == "literal_error":
        expected = err.get("ctx", {}).get("expected", "")
        return f"{source}: {key}: {err['input']!r} is not allowed; allowed values: {expected}."
    if kind == "value_error":  # a validator's own message; a whole section as the input is noise
        reason = str(err.get("ctx", {}).get("error") or err["msg"])
        shown = "" if isinstance(err.get("input"), dict | list) else f" (got {err.get('input')!r})"
        return f"{source}: {key}: {reason}{shown}."
    got = type(err["input"]).__name__ if "input" in err else "?"
    return f"{source}: {key}: {err['msg']} (got {err.get('input')!r} of type {got})."


def validate_section(
    model: type[StageParams],
    raw: Any,
    section: str,
    root: Path | str = ".",
    source: str = "params.yaml",
) -> StageParams:
    """Validate one params section against a kind's model, then the files it names."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: {section}: expected a mapping of keys, got {type(raw).__name__}.")
    try:
        params = model.model_validate(raw)
    except ValidationError as exc:
        raise ParamsError("\n".join(_describe(e, source, model, section) for e in exc.errors())) from None
    problems = params.check_files(Path(root), section)
    if problems:
        raise ParamsError("\n".join(f"{source}: {p}" for p in problems))
    return params


def read_params_file(path: Path | str) -> dict[str, Any]:
    """The parsed params file (a mapping of sections); ParamsError if missing or not YAML."""
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"{path}: params file not found.")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {exc}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ParamsError(f"{path.name}: expected a mapping of sections at the top level.")
    return raw


# ---------------------------------------------------------------------------------------------- kinds

_KIND_RE = re.compile(r"-m\s+dagster_project\.stages\.(\w+)")


def kind_params(kind: str) -> type[StageParams]:
    """The params model of a stage kind (`Params` in `dagster_project.stages.<kind>`)."""
    name = f"dagster_project.stages.{kind}"
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name == name:
            raise ParamsError(f"unknown stage kind {kind!r} (no module {name})") from None
        raise ParamsError(f"stage kind {kind!r} failed to import: {exc}") from None
    except ImportError as exc:
        raise ParamsError(f"stage kind {kind!r} failed to import: {exc}") from None
    model = getattr(module, "Params", None)
    if not (isinstance(model, type) and issubclass(model, StageParams)):
        raise ParamsError(f"stage kind {kind!r} declares no Params model")
    return model


@dataclass(frozen=True)
class KindUse:
    """One stage of a recipe that runs a stage kind: which section of which params file it reads."""

    stage: str
    kind: str
    section: str
    params_file: str  # relative to the recipe folder


def kind_uses(cmds: dict[str, str]) -> list[KindUse]:
    """The stage kinds that commands (stage name -> resolved cmd) run, with their sections."""
    uses = []
    for stage, cmd in cmds.items():
        m = _KIND_RE.search(cmd)
        if not m:
            continue
        try:
            argv = shlex.split(cmd)
        except ValueError:
            argv = cmd.split()
        opts = {a: b for a, b in zip(argv, argv[1:], strict=False) if a.startswith("--")}
        kind = m.group(1)
        uses.append(KindUse(stage, kind, opts.get("--section", kind), opts.get("--params", "params.yaml")))
    return uses


def recipe_commands(recipe_dir: Path | str) -> dict[str, str]:
    """Stage name -> resolved command of the recipe's dvc.yaml (DVC resolves foreach/matrix/${})."""
    return {name: cmd for name, (cmd, _) in recipe_stages(recipe_dir).items()}


def recipe_stages(recipe_dir: Path | str) -> dict[str, tuple[str, tuple[str, ...]]]:
    """Stage name -> (resolved command, deps relative to the recipe folder) of the recipe's dvc.yaml."""
    from dvc.repo import Repo

    recipe_dir = Path(recipe_dir).resolve()
    dvc_yaml = recipe_dir / "dvc.yaml"
    if not dvc_yaml.exists():
        return {}
    try:
        with Repo(str(recipe_dir)) as repo:
            stages = repo.stage.collect(str(dvc_yaml))
            return {
                s.name: (
                    s.cmd if isinstance(s.cmd, str) else " && ".join(s.cmd),
                    tuple(_dep_path(d.def_path, recipe_dir) for d in s.deps),
                )
                for s in stages
            }
    except Exception as exc:  # DVC's own parse/interpolation errors
        raise ParamsError(f"{dvc_yaml}: DVC cannot read it: {exc}") from None


def _dep_path(path: str, recipe_dir: Path) -> str:
    """A dep as written in dvc.yaml (relative to the recipe folder, or absolute), normalized."""
    return posixpath.normpath(str(path).replace("\\", "/"))


def _referenced_names(dvc_yaml: Path) -> set[str]:
    """Top-level params names dvc.yaml interpolates (`${name...}`): vars, not stage sections."""
    if not dvc_yaml.exists():
        return set()
    return set(re.findall(r"\$\{\s*([A-Za-z_][\w-]*)", dvc_yaml.read_text(encoding="utf-8")))


def validate_recipe(
    recipe_dir: Path | str,
    cmds: dict[str, str] | None = None,
    deps: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, StageParams]:
    """Validate every params section the recipe's stages read against their kinds' models.

    A section no stage reads (and dvc.yaml does not interpolate) is an error with a did-you-mean, so a
    typo in a section name cannot leave a stage silently on its defaults. Every data file a section
    makes its stage read must be among the stage's deps (`deps`: stage -> deps relative to the recipe
    folder; read from dvc.yaml when `cmds` is not given), so a changed file always makes it stale.
    Cross-section checks follow (`cross_checks`). Returns section -> model.
    """
    recipe_dir = Path(recipe_dir)
    if cmds is None:
        stages = recipe_stages(recipe_dir)
        cmds = {name: cmd for name, (cmd, _) in stages.items()}
        deps = {name: d for name, (_, d) in stages.items()}
    uses = kind_uses(cmds)
    validated: dict[str, StageParams] = {}
    errors: list[str] = []
    by_file: dict[str, list[KindUse]] = {}
    for use in uses:
        by_file.setdefault(use.params_file, []).append(use)
    for params_file, file_uses in by_file.items():
        path = recipe_dir / params_file
        raw = read_params_file(path)
        for use in file_uses:
            try:
                validated[use.section] = validate_section(
                    kind_params(use.kind), raw.get(use.section), use.section, path.parent, params_file
                )
            except ParamsError as exc:
                errors.append(str(exc))
                continue
            if deps is not None and use.stage in deps:
                params_dir = posixpath.dirname(params_file) or "."
                errors += undeclared_inputs(
                    validated[use.section], use.section, use.stage, deps[use.stage], params_dir, params_file
                )
        used = {u.section for u in file_uses} | _referenced_names(recipe_dir / "dvc.yaml")
        for name in raw:
            if name not in used:
                close = difflib.get_close_matches(name, sorted(used), n=1)
                hint = f" did you mean '{close[0]}'?" if close else ""
                errors.append(
                    f"{params_file}: {name}: no stage reads this section.{hint} Sections the stages read: "
                    f"{', '.join(sorted(u.section for u in file_uses))}."
                )
    if not errors:
        roots = {u.section: (recipe_dir / u.params_file).parent for u in uses}
        errors += cross_checks(validated, {u.section: u.kind for u in uses}, roots)
    if errors:
        raise ParamsError("\n".join(dict.fromkeys(errors)))
    return validated


def cross_checks(
    validated: Mapping[str, StageParams], kinds: Mapping[str, str], roots: Mapping[str, Path]
) -> list[str]:
    """Checks across sections: the gold rows of each evaluate section hold the columns the student's
    prompt format names (when the recipe trains one student, `train.prompt_format`), so a gold row without
    e.g. `context` fails here, not after synthesis and training."""
    trains = [s for s, k in kinds.items() if k == "train" and s in validated]
    evals = [s for s, k in kinds.items() if k == "evaluate" and s in validated]
    if len(trains) != 1 or not evals:
        return []
    from dagster_project.evaluation.gold_schema import GoldError, read_gold
    from dagster_project.evaluation.tasks import task_class
    from dagster_project.student.prompt_format import PromptFormat, PromptFormatError

    train = validated[trains[0]]
    fmt = PromptFormat.from_params(train.prompt_format)  # type: ignore[attr-defined]
    problems = []
    for section in evals:
        ev: Any = validated[section]
        path = roots[section] / ev.gold_test
        try:
            rows = read_gold(path, ev.task, ev.reference_column)
            task = task_class(ev.task)(
                ev.labels,
                reference_column=ev.reference_column,
                id_column=ev.id_column,
                category_column=ev.category_column,
            )
            items = task.items(rows)
            columns = [c for c in items[0] if all(c in it for it in items)] if items else []
            fmt.check_columns(columns, f"the gold set {ev.gold_test}", templates=("prompt",))
        except (GoldError, ValueError, PromptFormatError) as exc:
            problems.append(f"{section}.gold_test: {exc} (the student is asked in {trains[0]}.prompt_format)")
    return problems


def gold_checks_before_spending(params_path: Path | str) -> None:
    """Run the cross-section gold checks (`cross_checks`) of the recipe a stage's params file belongs to.

    A first teacher-spending stage calls this at its start, so a bare `dvc repro` with a gold set the
    student's prompt format cannot read fails before any teacher call or training, not when evaluate
    starts. The recipe's dvc.yaml is read as plain YAML (no DVC repo is opened inside a running stage):
    stages whose command DVC would template (`foreach`, `${...}` in `--section`/`--params`) are skipped.
    Raises ParamsError; a params file with no dvc.yaml beside it (a stage run by hand) is not checked.
    """
    recipe_dir = Path(params_path).parent
    dvc_yaml = recipe_dir / "dvc.yaml"
    if not dvc_yaml.exists():
        return
    try:
        stages = (yaml.safe_load(dvc_yaml.read_text(encoding="utf-8")) or {}).get("stages") or {}
    except (yaml.YAMLError, AttributeError):
        return  # DVC itself reports a broken dvc.yaml
    cmds = {
        name: " ".join(spec["cmd"]) if isinstance(spec.get("cmd"), list) else str(spec.get("cmd", ""))
        for name, spec in stages.items()
        if isinstance(spec, dict) and "foreach" not in spec and "matrix" not in spec
    }
    uses = [
        u
        for u in kind_uses(cmds)
        if u.kind in ("train", "evaluate") and "${" not in u.section + u.params_file
    ]
    validated: dict[str, StageParams] = {}
    errors = []
    for use in uses:
        path = recipe_dir / use.params_file
        if not path.exists():
            continue
        try:
            validated[use.section] = validate_section(
                kind_params(use.kind),
                read_params_file(path).get(use.section),
                use.section,
                path.parent,
                use.params_file,
            )
        except ParamsError as exc:
            errors.append(str(exc))
    if not errors:
        roots = {u.section: (recipe_dir / u.params_file).parent for u in uses}
        errors = cross_checks(validated, {u.section: u.kind for u in uses}, roots)
    if errors:
        raise ParamsError("\n".join(dict.fromkeys(errors)))


def validate_params(raw: Any, root: Path | str = ".", source: str = "params.yaml") -> dict[str, StageParams]:
    """Validate a parsed params mapping as the recipe at `root` uses it (its dvc.yaml's kinds); without a
    dvc.yaml, each section whose name is a stage kind is validated against that kind."""
    root = Path(root)
    if not isinstance(raw, dict):
        raise ParamsError(
            f"{source}: expected a mapping of sections at the top level, got {type(raw).__name__}."
        )
    if (root / "dvc.yaml").exists():
        uses = kind_uses(recipe_commands(root))
    else:
        uses = [KindUse(s, s, s, source) for s in raw if _is_kind(s)]
    errors, validated = [], {}
    for use in uses:
        try:
            validated[use.section] = validate_section(
                kind_params(use.kind), raw.get(use.section), use.section, root, source
            )
        except ParamsError as exc:
            errors.append(str(exc))
    if errors:
        raise ParamsError("\n".join(dict.fromkeys(errors)))
    return validated


def _is_kind(name: str) -> bool:
    try:
        kind_params(name)
    except ParamsError:
        return False
    return True
