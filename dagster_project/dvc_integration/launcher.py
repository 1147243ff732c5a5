"""A run launcher that runs this project's runs in a thread of the process that launches them.

A run of a recipe's assets is one step waiting on one `dvc repro` subprocess, and DVC runs every stage
command in a subprocess of its own: that is the isolation a run needs. The default launcher adds a new
Python process per run, which imports Dagster and loads the definitions again (reads DVC's index of
every recipe, validates the params, hashes the file deps): seconds before DVC even starts. This launcher
keeps the definitions it loaded for each load of the code location (a reload in the UI makes it load
them again) and runs each launched run in a thread of the webserver (or daemon) process.

Runs of any other code location go to Dagster's `DefaultRunLauncher`, and so do the project's runs whose
executor runs steps in processes of their own (`multiprocess` in the run config, a recipe job that runs
pool stages side by side, celery): those processes load the job themselves. Terminating a run stops its
`dvc` process the way Ctrl-C does and the run ends canceled. What runs in-process is the project's
integration code as imported when the first run was launched: after editing the project's own Python
package (not the stage code DVC runs, which is read fresh by every stage), restart `dagster dev`.
"""

import logging
import os
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dagster as dg
from dagster._core.definitions.job_base import InMemoryJob
from dagster._core.execution.api import execute_run
from dagster._core.launcher import DefaultRunLauncher, LaunchRunContext, RunLauncher
from dagster._core.system_config.objects import ResolvedRunConfig
from dagster._serdes import ConfigurableClass
from dagster._serdes.config_class import ConfigurableClassData
from dagster._utils.error import serializable_error_info_from_exc_info

from dagster_project.dvc_integration.executors import needs_own_process
from dagster_project.dvc_integration.location import build_code_location, project_dir_from_env
from dagster_project.dvc_integration.resource import forget_run, interrupt_runs_dvc

DEFINITIONS_MODULE = "dagster_project.definitions"
IN_PROCESS_EVENT = "Executing in a thread of the launching process"
SUBPROCESS_EVENT = "Launching in a process of its own: the run's executor runs steps in their own processes"

log = logging.getLogger(__name__)


def is_project_run(run: dg.DagsterRun) -> bool:
    """Whether a run's job comes from this project's definitions module (`-m dagster_project.definitions`
    or `-f .../dagster_project/definitions.py`)."""
    origin = run.job_code_origin
    if origin is None:
        return False
    pointer = origin.repository_origin.code_pointer
    module = getattr(pointer, "module", None)
    python_file = getattr(pointer, "python_file", None)
    if module is not None:
        return module == DEFINITIONS_MODULE
    return python_file is not None and Path(python_file).as_posix().endswith("dagster_project/definitions.py")


def executor_config(job_def: dg.JobDefinition, run: dg.DagsterRun) -> dict:
    """The run's executor config as the run will resolve it: its run config over the job's own config
    (a recipe job's multiprocess default) and the executor's defaults."""
    resolved = ResolvedRunConfig.build(job_def, run.run_config or {})
    return dict(resolved.execution.execution_engine_config or {})


class InProcessRunLauncher(RunLauncher, ConfigurableClass):
    """Runs this project's runs in a thread of the launching process with definitions loaded once per
    code-location load; delegates every other run to `DefaultRunLauncher`."""

    def __init__(self, inst_data: ConfigurableClassData | None = None):
        self._inst_data = inst_data
        self._fallback = DefaultRunLauncher()
        self._definitions: dict[str, dg.Definitions] = {}
        self._load_lock = threading.Lock()
        self._threads: dict[str, threading.Thread] = {}
        super().__init__()

    @property
    def inst_data(self) -> ConfigurableClassData | None:
        return self._inst_data

    @classmethod
    def config_type(cls) -> dict:
        return {}

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData, config_value: Mapping[str, Any]):
        return cls(inst_data=inst_data)

    def register_instance(self, instance) -> None:
        super().register_instance(instance)
        self._fallback.register_instance(instance)

    # --- launching ---------------------------------------------------------------------------------

    def launch_run(self, context: LaunchRunContext) -> None:
        run = context.dagster_run
        if not is_project_run(run):
            self._fallback.launch_run(context)
            return
        version = self._location_version(context)
        thread = threading.Thread(
            target=self._execute,
            args=(context, version),
            name=f"dagster-run-{run.run_id[:8]}",
            daemon=True,
        )
        self._threads[run.run_id] = thread
        thread.start()  # the launch returns at once; loading (first run) and execution happen there

    @staticmethod
    def _location_version(context: LaunchRunContext) -> str:
        """Which load of the code location the run was launched from: the gRPC server's id (a new one
        after every reload), so a reload in the UI reloads the definitions here too."""
        run = context.dagster_run
        if context.workspace is None or run.remote_job_origin is None:
            return "local"
        name = run.remote_job_origin.repository_origin.code_location_origin.location_name
        try:
            return str(context.workspace.get_code_location(name).server_id)  # ty: ignore[unresolved-attribute]
        except Exception:  # an in-process code location has no server id
            return "local"

    def definitions_for(self, version: str) -> dg.Definitions:
        """The project's definitions for one load of the code location (loaded on first use)."""
        with self._load_lock:
            if version not in self._definitions:
                self._definitions = {version: build_code_location(project_dir_from_env())}
            return self._definitions[version]

    def _execute(self, context: LaunchRunContext, version: str) -> None:
        instance = self._instance
        run_id = context.dagster_run.run_id
        run = instance.get_run_by_id(run_id)
        if run is None:
            return
        try:
            job_def = self.definitions_for(version).resolve_job_def(run.job_name)
            if needs_own_process(job_def.executor_def, executor_config(job_def, run)):
                instance.report_engine_event(SUBPROCESS_EVENT, run, cls=type(self))
                self._fallback.launch_run(context)
                return
            instance.report_engine_event(f"{IN_PROCESS_EVENT} (pid {os.getpid()})", run, cls=type(self))
            execute_run(InMemoryJob(job_def), run, instance)
        except Exception:  # loading failed, or the run could not start: the run fails, saying why
            error = serializable_error_info_from_exc_info(sys.exc_info())
            log.exception("run %s failed before or outside its steps", run_id)
            current = instance.get_run_by_id(run_id)
            if current is not None and not current.is_finished:
                instance.report_run_failed(current, message=f"The run could not execute: {error.message}")
        finally:
            self._threads.pop(run_id, None)
            forget_run(run_id)

    # --- termination and shutdown ------------------------------------------------------------------

    def terminate(self, run_id: str) -> bool:
        thread = self._threads.get(run_id)
        if thread is None or not thread.is_alive():
            return self._fallback.terminate(run_id)
        run = self._instance.get_run_by_id(run_id)
        if run is None or run.is_finished:
            return False
        self._instance.report_run_canceling(run)
        interrupt_runs_dvc(run_id)
        return True

    def dispose(self) -> None:
        """Stop the dvc process of every run still executing here (the process is going away)."""
        for run_id, thread in list(self._threads.items()):
            if thread.is_alive():
                interrupt_runs_dvc(run_id)
        self.join(timeout=30)
        self._fallback.dispose()

    def join(self, timeout: int = 30) -> None:
        for thread in list(self._threads.values()):
            thread.join(timeout)
        self._fallback.join(timeout)
