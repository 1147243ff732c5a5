"""Preference training of a student (the `dpo` stage kind's library): TRL's DPOTrainer around the student's
prompt format, the held-out log-probability margin and the DPO training curves."""
