"""One Dagster-free module per pipeline stage, each runnable as `python -m dagster_project.stages.X`."""
