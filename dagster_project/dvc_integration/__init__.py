"""The DVC -> Dagster integration, dagster-dbt in miniature.

dvc.yaml (via DVC's parsed index) becomes asset specs (`translator`), each asset materializes by
running DVC (`resource`), versions come from dvc.lock (`project`), and a sensor reconciles runs made
outside Dagster (`sensor`). No domain logic lives here.
"""

from dagster_project.dvc_integration.assets import build_dvc_assets
from dagster_project.dvc_integration.resource import DvcCliResource
from dagster_project.dvc_integration.sensor import build_dvc_lock_sensor
from dagster_project.dvc_integration.translator import DvcTranslator

__all__ = ["DvcCliResource", "DvcTranslator", "build_dvc_assets", "build_dvc_lock_sensor"]
