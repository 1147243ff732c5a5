"""Build one Dagster multi-asset per recipe, one asset per DVC stage (subsettable, like dagster-dbt's
`@dbt_assets`). Materializing any selection runs one
`dvc --wait-for-lock repro --single-item <dvc.yaml path>:<stage> ...` from the repo root."""

import re
from collections.abc import Iterable, Iterator
from pathlib import Path

import dagster as dg
from dagster._core.errors import DagsterExecutionInterruptedError

from dagster_project.dvc_integration.checks import check_definitions, check_results, check_specs
from dagster_project.dvc_integration.metadata import output_metadata
from dagster_project.dvc_integration.project import DvcProject, DvcStage, Recipe
from dagster_project.dvc_integration.resource import (
    DvcCliResource,
    DvcCommandError,
    DvcInterrupted,
    default_remote,
)
from dagster_project.dvc_integration.translator import POOL_TAG, DvcTranslator, dagster_name
from dagster_project.dvc_integration.versions import data_version_from_lock, lock_entry_hash, read_lock

LOCK_ENTRY_TAG = "dvc/lock_entry"
STAGE_TAG = "dvc/stage"
RECIPE_TAG = "dvc/recipe"
SOURCE_TAG = "dvc/source"
OUTCOME_METADATA = "dvc_outcome"


def as_project(project: "DvcProject | str | Path") -> DvcProject:
    """A loaded project, loading it from a repo root if given a path."""
    return project if isinstance(project, DvcProject) else DvcProject.load(project)


def materialization_parts(
    root: Path, recipe: Recipe, stage: DvcStage
) -> tuple[str | None, dict[str, str], dict]:
    """Data version, provenance tags and metadata of a stage as its recipe's dvc.lock and outputs say now."""
    entry = read_lock(root, recipe).get(stage.name)
    tags = {STAGE_TAG: dagster_name(stage.name), RECIPE_TAG: recipe.name}  # tag values: [A-Za-z0-9_.-]
    lock_hash = lock_entry_hash(entry)
    if lock_hash:
        tags[LOCK_ENTRY_TAG] = lock_hash
    preview = stage.dagster_meta.get("preview")
    return data_version_from_lock(entry), tags, output_metadata(root, stage.outs, preview)


def topological(stages: "tuple[DvcStage, ...] | list[DvcStage]") -> list[DvcStage]:
    """The stages in dependency order (upstream first; dvc.yaml order among independent stages)."""
    by_name = {s.name: s for s in stages}
    done: list[DvcStage] = []
    seen: set[str] = set()

    def visit(stage: DvcStage, path: tuple[str, ...] = ()) -> None:
        if stage.name in seen:
            return
        if stage.name in path:
            raise ValueError(f"stages {' -> '.join((*path, stage.name))} form a cycle")
        for up in stage.upstream:
            visit(by_name[up], (*path, stage.name))
        seen.add(stage.name)
        done.append(stage)

    for stage in stages:
        visit(stage)
    return done


# What `dvc repro` prints when it starts a stage, pulls its outputs, or is done with it (skipped it or
# restored it from the run cache); starting the next stage means the previous one is done.
_STAGE_LINE = re.compile(
    r"^(?:Running stage '(?P<run>[^']+)'"
    r"|Pulling data for stage: '(?P<pull>[^']+)'"
    r"|Stage '(?P<skip>[^']+)' didn't change, skipping"
    r"|Stage '(?P<cached>[^']+)' is cached - skipping run, checking out outputs)"
)

# How a stage's outputs came to be what they are after a run (the `dvc_outcome` metadata).
RECOMPUTED = "recomputed"
PULLED = "pulled from the remote"
RUN_CACHE = "restored from the run cache"
UP_TO_DATE = "up to date"


def stage_events(lines: Iterable[str], names: dict[str, str]) -> Iterator[tuple[str, str, str]]:
    """(`line`, "", "") for every output line, and ("", stage name, outcome) each time DVC is done with
    a stage: when it skips it (UP_TO_DATE), restores it from the run cache (RUN_CACHE), pulled its
    recorded outputs (PULLED), or ran it (RECOMPUTED, reported when the next stage starts or at the end).
    `names` maps how DVC prints a stage (`dedup`, `examples/x/dvc.yaml:score`) to the stage's name."""
    current: str | None = None
    outcome = ""
    for line in lines:
        yield line, "", ""
        match = _STAGE_LINE.match(line.strip())
        if not match:
            continue
        printed = match.group("run") or match.group("pull") or match.group("skip") or match.group("cached")
        name = names.get(printed)
        if name is None:
            continue
        if current is not None and current != name:
            yield "", current, outcome
        current = name
        if match.group("run"):  # also after "Unable to pull data": then it is recomputed
            outcome = RECOMPUTED
        elif match.group("pull"):
            outcome = PULLED
        else:  # skipped or restored: done now
            yield "", name, UP_TO_DATE if match.group("skip") else RUN_CACHE
            current = None
    if current is not None:
        yield "", current, outcome


def step_groups(
    stages: "tuple[DvcStage, ...] | list[DvcStage]", own_step: set[str]
) -> list[tuple[list[str], int]]:
    """Split a recipe's stages into Dagster steps, as (stage names, level) upstream first: each stage in
    `own_step` alone (a `foreach` of them gives one step per entry, which an executor can run in
    parallel); every other stage shares a step with the stages that have as many own-step stages
    upstream of them (their level), so a recipe with none is one step. The steps form no cycle: a shared
    step only feeds steps of a higher level."""
    ordered = topological(stages)
    level: dict[str, int] = {}  # own-step stages on the longest path ending at a stage (itself included)
    for stage in ordered:
        above = max((level[u] for u in stage.upstream), default=0)
        level[stage.name] = above + (1 if stage.name in own_step else 0)
    steps: list[tuple[int, int, list[str]]] = []  # (level, position of its first stage, names)
    shared: dict[int, tuple[int, list[str]]] = {}
    for position, stage in enumerate(ordered):
        if stage.name in own_step:
            steps.append((level[stage.name], position, [stage.name]))
        else:
            shared.setdefault(level[stage.name], (position, []))[1].append(stage.name)
    steps += [(lvl, position, names) for lvl, (position, names) in shared.items()]
    return [(names, lvl) for lvl, _, names in sorted(steps, key=lambda t: (t[0], t[1]))]


def _build_step(
    recipe: Recipe,
    specs: dict[str, dg.AssetSpec],
    name: str,
    pool: str | None,
    op_tags: dict[str, str],
) -> dg.AssetsDefinition:
    """One multi-asset over some stages of a recipe, like dagster-dbt's `@dbt_assets`: a run of any
    subset of them is one `dvc repro --single-item` over the selected stages in dependency order, and
    each stage is reported (data version, metadata, checks) as soon as DVC is done with it."""
    checks = {n: check_definitions(recipe.stage(n).dagster_meta) for n in specs}
    check_spec_list = [c for n, spec in specs.items() for c in check_specs(spec.key, checks[n])]
    order = [s.name for s in topological(recipe.stages) if s.name in specs]
    by_key = {spec.key: n for n, spec in specs.items()}
    # DVC prints the root's stages by name and other recipes' as `<dvc.yaml path>:<stage>`.
    printed = {}
    for stage in recipe.stages:
        printed[stage.name if recipe.folder == "." else stage.address] = stage.name
        printed[stage.address] = stage.name

    @dg.multi_asset(
        specs=[spec.replace_attributes(skippable=True) for spec in specs.values()],
        check_specs=check_spec_list,
        can_subset=True,
        name=name,
        pool=pool,
        op_tags={RECIPE_TAG: dagster_name(recipe.name), **op_tags},
    )
    def _asset(context: dg.AssetExecutionContext, dvc: DvcCliResource):
        root = Path(dvc.project_dir)
        selected = {by_key[k] for k in context.selected_asset_keys}
        selected_checks = set(context.selected_asset_check_keys)
        stages = [recipe.stage(n) for n in order if n in selected]
        # `--pull`: a stage whose recorded outputs are missing here is first pulled from the remote
        # (and a changed one restored from the remote's run cache) before anything is recomputed.
        pull = ["--pull"] if dvc.pull and default_remote(root) else []
        args = ["--wait-for-lock", "repro", *pull, "--single-item", *(s.address for s in stages)]
        context.log.info("dvc " + " ".join(args))
        reported: list[str] = []

        def report(stage_name: str, outcome: str):
            stage = recipe.stage(stage_name)
            spec = specs[stage_name]
            # Also when DVC skipped the stage, pulled it or restored it from the run cache: versions
            # come from dvc.lock, not from what the command printed.
            data_version, tags, metadata = materialization_parts(root, recipe, stage)
            yield dg.MaterializeResult(
                asset_key=spec.key,
                data_version=dg.DataVersion(data_version) if data_version else None,
                tags={**tags, SOURCE_TAG: "dagster"},
                metadata={OUTCOME_METADATA: outcome, **metadata},
            )
            # Checks declared in dvc.yaml `meta.dagster.checks`, over the outputs as they are now.
            for result in check_results(root / stage.wdir, spec.key, checks[stage_name]):
                if dg.AssetCheckKey(spec.key, result.check_name) in selected_checks:
                    yield result
            reported.append(stage_name)

        try:
            for line, done, outcome in stage_events(dvc.stream(*args, run_id=context.run.run_id), printed):
                if line:
                    context.log.info(line)
                elif done in selected and done not in reported:
                    yield from report(done, outcome)
        except DvcInterrupted as exc:  # the run was terminated: Dagster marks it canceled
            raise DagsterExecutionInterruptedError(
                f"{exc}; stages reported before: {', '.join(reported) or 'none'}"
            ) from None
        except DvcCommandError as exc:
            left = [s.name for s in stages if s.name not in reported]
            raise DvcCommandError(
                f"{exc}\nstages reported before the failure: {', '.join(reported) or 'none'}; "
                f"not materialized: {', '.join(left)}"
            ) from None
        for stage in stages:  # DVC printed nothing about a stage (should not happen): report it too
            if stage.name not in reported:
                yield from report(stage.name, UP_TO_DATE)

    return _asset


def step_name(recipe: Recipe, names: list[str], own: bool, level: int) -> str:
    """The op name of a step: `dvc__<recipe>` for the recipe's first shared step (the whole recipe when
    no stage has a step of its own), `dvc__<recipe>__<stage>` for an own-step stage, and
    `dvc__<recipe>__after_<n>` for a shared step below n own-step stages."""
    base = f"dvc__{dagster_name(recipe.name)}"
    if own:
        return f"{base}__{dagster_name(names[0])}"
    return base if level == 0 else f"{base}__after_{level}"


def build_recipe_assets(recipe: Recipe, translator: DvcTranslator | None = None) -> list[dg.AssetsDefinition]:
    """The assets of one (loaded) recipe, one per stage, in as few steps as its `meta.dagster` allows:
    stages that name a `pool` or `resources` run as steps of their own (see `step_groups`), the others
    share one multi-asset per level. Raises if two of its stages map to one asset key."""
    translator = translator or DvcTranslator()
    by_name = {s.name: s for s in recipe.stages}
    seen: dict[dg.AssetKey, str] = {}
    specs: dict[str, dg.AssetSpec] = {}
    for stage in recipe.stages:
        spec = translator.get_spec(stage, by_name, recipe.code_versions.get(stage.name))
        if spec.key in seen:
            key = spec.key.to_user_string()
            raise ValueError(
                f"stages {seen[spec.key]!r} and {stage.name!r} both map to asset {key!r}"
                " (their outputs lie in folders of one name): rename an output folder"
            )
        seen[spec.key] = stage.name
        specs[stage.name] = spec
        translator.get_concurrency(stage)  # a malformed limit fails the recipe's load, naming the stage
    own = {s.name for s in recipe.stages if translator.get_own_step(s)}
    assets = []
    for names, level in step_groups(recipe.stages, own):
        is_own = names[0] in own
        pool = translator.get_pool(by_name[names[0]]) if is_own else None
        tags = translator.get_op_tags([by_name[n] for n in names])
        if pool:
            tags[POOL_TAG] = dagster_name(pool)
        name = step_name(recipe, names, is_own, level)
        assets.append(_build_step(recipe, {n: specs[n] for n in names}, name, pool, tags))
    return assets


def build_dvc_assets(
    project: "DvcProject | str | Path", translator: DvcTranslator | None = None
) -> list[dg.AssetsDefinition]:
    """One asset per stage of every recipe that loaded (a recipe that failed gets none; see
    `errors.build_recipe_error_sensors`)."""
    project = as_project(project)
    return [a for recipe in project.ok_recipes for a in build_recipe_assets(recipe, translator)]
