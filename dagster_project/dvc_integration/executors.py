"""The executor of the project's runs, and the run config that runs a recipe's own-step stages in parallel.

A recipe's stages share as few steps as their `meta.dagster` allows (see `assets.step_groups`): most
runs are one step waiting on one `dvc repro`, which runs best in the run's own process. Stages that name
a `pool` (synthesis shards: one `foreach` entry per shard) are steps of their own, and the multiprocess
executor runs them side by side, at most `meta.dagster.concurrency` of one pool at once.

`DISTILL_EXECUTOR=celery` (`location.project_executor`) replaces `dvc_executor` with
`celery_executor_from_env`: it sends every step to `dagster-celery` workers through a broker
(`DISTILL_CELERY_BROKER`, default `redis://127.0.0.1:6379/0`), results coming back through
`DISTILL_CELERY_BACKEND` (default: the broker's URL). The workers must listen on that broker and load
the same definitions with the same environment; `celery_worker_config` writes the file
`dagster-celery worker start -y` takes, from the same variables, so both ends agree. Under celery a
pool's limit is the instance's (`dagster instance concurrency set <pool> <n>`) and the workers' slots,
not run config. `dagster_celery` is imported only when celery is chosen.
"""

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import dagster as dg
from dagster._core.definitions.executor_definition import (
    IN_PROC_CONFIG,
    MULTI_PROC_CONFIG,
    ExecutorRequirement,
    multiple_process_executor_requirements,
)

from dagster_project.dvc_integration.project import Recipe
from dagster_project.dvc_integration.translator import POOL_TAG, DvcTranslator, dagster_name


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


BROKER_ENV = "DISTILL_CELERY_BROKER"
BACKEND_ENV = "DISTILL_CELERY_BACKEND"
DEFAULT_BROKER = "redis://127.0.0.1:6379/0"


def celery_config(environ: Mapping[str, str] | None = None) -> dict:
    """The `celery_executor` config (broker and result backend) the environment names."""
    environ = os.environ if environ is None else environ
    broker = (environ.get(BROKER_ENV) or "").strip() or DEFAULT_BROKER
    backend = (environ.get(BACKEND_ENV) or "").strip() or broker
    return {"broker": broker, "backend": backend}


def celery_worker_config(path: "str | Path", environ: Mapping[str, str] | None = None) -> Path:
    """Write the YAML `dagster-celery worker start -y <path>` reads (`execution.config`): the broker and
    backend the project's celery executor uses under `environ`. Returns the path."""
    import yaml

    path = Path(path)
    path.write_text(yaml.safe_dump({"execution": {"config": celery_config(environ)}}, sort_keys=False))
    return path


def celery_executor_from_env(environ: Mapping[str, str] | None = None) -> dg.ExecutorDefinition:
    """dagster-celery's executor with the broker and backend of `celery_config` (`DISTILL_EXECUTOR=celery`
    in `location.project_executor`)."""
    from dagster_celery import celery_executor

    return celery_executor.configured(celery_config(environ), name="celery")


def main(argv: "list[str] | None" = None) -> None:
    """`python -m dagster_project.dvc_integration.executors worker-config <path>`: write the config file
    for `dagster-celery worker start -y <path>` from this environment's DISTILL_CELERY_* variables."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m dagster_project.dvc_integration.executors")
    sub = parser.add_subparsers(dest="command", required=True)
    write = sub.add_parser("worker-config", help="write the celery workers' config YAML (broker, backend)")
    write.add_argument("path", help="the YAML file to write, e.g. celery.yaml")
    args = parser.parse_args(argv)
    print(celery_worker_config(args.path))


if __name__ == "__main__":
    main()
