"""The executor of the project's runs, and the run config that runs a recipe's own-step stages in parallel.

A recipe's stages share as few steps as their `meta.dagster` allows (see `assets.step_groups`): most
runs are one step waiting on one `dvc repro`, which runs best in the run's own process. Stages that name
a `pool` (synthesis shards: one `foreach` entry per shard) are steps of their own, and the multiprocess
executor runs them side by side, at most `meta.dagster.concurrency` of one pool at once.
"""

import os
from collections.abc import Sequence

import dagster as dg
from dagster._core.definitions.executor_definition import (
    IN_PROC_CONFIG,
    MULTI_PROC_CONFIG,
    ExecutorRequirement,
    multiple_process_executor_requirements,
)

from dagster_project.dvc_integration.project import Recipe
from dagster_project.dvc_integration.translator import DvcTranslator, dagster_name


def _requirements(config) -> Sequence[ExecutorRequirement]:
    return multiple_process_executor_requirements() if "multiprocess" in config else []


dvc_executor = dg.ExecutorDefinition(
    name="dvc_executor",
    config_schema=dg.Field(
        dg.Selector({"in_process": IN_PROC_CONFIG, "multiprocess": MULTI_PROC_CONFIG}),
        default_value={"in_process": {}},
    ),
    requirements=_requirements,
    executor_creation_fn=dg.multi_or_in_process_executor.executor_creation_fn,
    description=(
        "Dagster's in-process executor by default (a run is one step waiting on `dvc repro`); choose "
        "`multiprocess` to run own-step stages (a pool's `foreach` shards) side by side."
    ),
)


def needs_own_process(executor: dg.ExecutorDefinition, executor_config: dict) -> bool:
    """Whether an executor (with its config from the run config) runs steps in processes that load the
    job again, so the run cannot execute from definitions held in memory."""
    return ExecutorRequirement.RECONSTRUCTABLE_JOB in executor.get_requirements(executor_config)


def parallel_run_config(recipe: Recipe, translator: DvcTranslator | None = None) -> dict | None:
    """Run config that executes a recipe's own-step stages in parallel: the multiprocess executor with
    each pool limited to its stages' smallest `meta.dagster.concurrency`. None when no stage of the recipe
    names a pool (one step: nothing to run side by side)."""
    translator = translator or DvcTranslator()
    limits: dict[str, int | None] = {}
    sizes: dict[str, int] = {}
    for stage in recipe.stages:
        pool = translator.get_pool(stage)
        if not pool:
            continue
        limit = translator.get_concurrency(stage)
        known = limits.get(pool)
        limits[pool] = limit if known is None else min(known, limit or known)
        sizes[pool] = sizes.get(pool, 0) + 1
    if not limits:
        return None
    # Pool steps mostly wait (on the teacher, on DVC): the default cap, one step per CPU, would hold
    # them back; the pools' own limits are the cap, plus one step for the rest of the recipe.
    steps_at_once = sum(limits[p] or sizes[p] for p in limits) + 1
    from dagster_project.dvc_integration.assets import POOL_TAG

    tag_limits = [
        {"key": POOL_TAG, "value": dagster_name(pool), "limit": limit}
        for pool, limit in sorted(limits.items())
        if limit is not None
    ]
    multiprocess = {
        "max_concurrent": max(steps_at_once, os.cpu_count() or 1),
        "tag_concurrency_limits": tag_limits,
    }
    return {"execution": {"config": {"multiprocess": multiprocess}}}
