"""Moved to `dagster_project.evaluation.charts` (stages/ holds stage kinds only).

Kept only for `stages/calibrate_judge.py`, which still imports from here; delete this file once it imports
`dagster_project.evaluation.charts` instead.
"""

from dagster_project.evaluation.charts import *  # noqa: F403
from dagster_project.evaluation.charts import __all__  # noqa: F401
