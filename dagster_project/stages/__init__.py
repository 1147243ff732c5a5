"""One Dagster-free module per pipeline stage; each is runnable as `python -m dagster_project.stages.<name>`."""
