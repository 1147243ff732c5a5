"""Evaluation of a student below the evaluate stage: task kinds (`tasks.py`), generation, scoring,
the teacher reference and judge, diversity figures and the report."""
