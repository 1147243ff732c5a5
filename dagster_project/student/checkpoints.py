"""Checkpoints of a training run, for resume: where they live, what a run must match to resume one."""

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

CHECKPOINT_ROOT_ENV = "DISTILL_TRAIN_CHECKPOINTS"  # operational (not a param): where checkpoints live
DEFAULT_CHECKPOINT_ROOT = ".cache/train-checkpoints"


def run_fingerprint(params: Any, train_rows: Sequence, val_rows: Sequence, code: Sequence[Path] = ()) -> str:
    """What a checkpoint must match to be resumed: params (a pydantic model or a mapping), data, the code
    that trains (the student package and the stage, `code`), and the world size."""
    h = hashlib.sha256()
    plain = params.model_dump(mode="json") if hasattr(params, "model_dump") else params
    h.update(json.dumps(plain, sort_keys=True, default=str).encode())
    h.update(json.dumps([list(train_rows), list(val_rows)], sort_keys=True, default=str).encode())
    for path in (*sorted(Path(__file__).parent.glob("*.py")), *code):
        h.update(Path(path).read_bytes())
    h.update(str(world_size()).encode())
    return h.hexdigest()[:16]


def last_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete `checkpoint-<step>` folder in `run_dir` (the Trainer writes
    trainer_state.json last, so a folder cut short by a kill is skipped), or None."""
    done = [
        d
        for d in Path(run_dir).glob("checkpoint-*")
        if d.name.split("-")[-1].isdigit() and (d / "trainer_state.json").exists()
    ]
    return max(done, key=lambda d: int(d.name.split("-")[-1]), default=None)


def world_size() -> int:
    """How many processes train together (torchrun sets WORLD_SIZE)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0
