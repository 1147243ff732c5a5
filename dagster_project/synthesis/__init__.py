"""Library code of the synthesis stage kinds (no Dagster, no CLI)."""
