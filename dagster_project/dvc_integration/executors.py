"""Which Dagster executor runs the project's steps, chosen from the environment.

`DISTILL_EXECUTOR` names it: unset (or `default`) keeps the definitions' own default; `in_process` and
`multiprocess` are Dagster's executors on this machine; `celery` sends every step to `dagster-celery`
workers through a broker (`DISTILL_CELERY_BROKER`, default `redis://127.0.0.1:6379/0`), results coming
back through `DISTILL_CELERY_BACKEND` (default: the broker's URL). The workers must listen on that broker
and load the same definitions with the same environment; `celery_worker_config` writes the config file
`dagster-celery worker start -y` takes, from the same variables, so both ends agree.

`dagster_celery` (and celery, kombu, redis) is imported only when celery is chosen: loading the
definitions stays light otherwise.
"""

import os
from collections.abc import Mapping
from pathlib import Path

import dagster as dg

EXECUTOR_ENV = "DISTILL_EXECUTOR"
BROKER_ENV = "DISTILL_CELERY_BROKER"
BACKEND_ENV = "DISTILL_CELERY_BACKEND"
DEFAULT_BROKER = "redis://127.0.0.1:6379/0"
EXECUTORS = ("in_process", "multiprocess", "celery")


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


def executor_from_env(
    environ: Mapping[str, str] | None = None, default: dg.ExecutorDefinition | None = None
) -> dg.ExecutorDefinition:
    """The executor `DISTILL_EXECUTOR` names, or `default` (Dagster's in-process executor if None) when
    it is unset or `default`. Raises ValueError naming the allowed values on any other value."""
    environ = os.environ if environ is None else environ
    default = dg.in_process_executor if default is None else default
    value = (environ.get(EXECUTOR_ENV) or "").strip()
    name = value.lower().replace("-", "_")
    if name in ("", "default"):
        return default
    if name == "in_process":
        return dg.in_process_executor
    if name == "multiprocess":
        return dg.multiprocess_executor
    if name == "celery":
        from dagster_celery import celery_executor

        return celery_executor.configured(celery_config(environ), name="celery")
    raise ValueError(
        f"{EXECUTOR_ENV}={value!r} is not an executor: set it to one of {', '.join(EXECUTORS)}"
        " (or leave it unset for the definitions' default)"
    )
