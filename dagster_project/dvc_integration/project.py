"""Read a DVC project: its stages (from DVC's parsed index) and its ledger (dvc.lock).

Everything Dagster knows about the pipeline is derived here; nothing is written twice:
- the graph comes from `dvc.repo.Repo(root).index`, which resolves foreach/matrix/${} templating;
- versions come from hashing what DVC itself records, so the same function applied to the
  workspace (at definition load) and to dvc.lock (in the sensor) agree exactly when DVC says the
  stage is up to date.
"""

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

ASSETS_DIR = "assets"


@dataclass(frozen=True)
class DvcStage:
    """One stage of dvc.yaml, as DVC resolved it."""

    name: str
    cmd: str
    deps: tuple[str, ...]  # repo-relative paths (params files excluded)
    outs: tuple[str, ...]  # repo-relative paths, metrics/plots outputs included
    params: dict[str, tuple[str, ...]]  # params file -> declared keys
    meta: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    upstream: tuple[str, ...] = ()  # names of stages whose outputs this stage depends on

    @property
    def dagster_meta(self) -> dict[str, Any]:
        """The `meta.dagster` block: Dagster-only facts DVC ignores for invalidation."""
        return dict((self.meta or {}).get("dagster") or {})


def _canonical_hash(obj: Any) -> str:
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _contains(parent: str, child: str) -> bool:
    """Whether `child` is `parent` or lies inside it (repo-relative POSIX paths)."""
    p, c = PurePosixPath(parent), PurePosixPath(child)
    return c == p or p in c.parents


def _rel(root: Path, fs_path: str) -> str:
    return Path(fs_path).resolve().relative_to(root.resolve()).as_posix()


def load_stages(root: Path | str) -> list[DvcStage]:
    """Every pipeline stage of the DVC project at `root`, in dvc.yaml order, with upstream links."""
    from dvc.repo import Repo

    root = Path(root)
    with Repo(str(root)) as repo:
        raw = []
        for stage in repo.index.stages:
            if not getattr(stage, "cmd", None):  # .dvc files of `dvc add` are data, not stages
                continue
            params = {
                _rel(root, p.fs_path): tuple(p.params or ())
                for p in stage.deps
                if type(p).__name__ == "ParamsDependency"
            }
            deps = tuple(_rel(root, d.fs_path) for d in stage.deps if type(d).__name__ != "ParamsDependency")
            outs = tuple(_rel(root, o.fs_path) for o in stage.outs)
            raw.append((stage.name, stage.cmd, deps, outs, params, dict(stage.meta or {})))
    stages = []
    for name, cmd, deps, outs, params, meta in raw:
        upstream = tuple(
            other[0]
            for other in raw
            if other[0] != name and any(_contains(o, d) or _contains(d, o) for o in other[3] for d in deps)
        )
        cmd_str = cmd if isinstance(cmd, str) else " && ".join(cmd)
        stages.append(DvcStage(name, cmd_str, deps, outs, params, meta, upstream))
    return stages


def asset_folder(stage: DvcStage) -> str:
    """The folder that holds a stage's outputs: the single out dir, or the common parent of its files."""
    if len(stage.outs) == 1:
        out = PurePosixPath(stage.outs[0])
        return out.as_posix() if not out.suffix else out.parent.as_posix()
    common = PurePosixPath(stage.outs[0]).parent
    while not all(_contains(common.as_posix(), o) for o in stage.outs):
        common = common.parent
    return common.as_posix()


def read_lock(root: Path | str) -> dict[str, dict[str, Any]]:
    """The `stages` mapping of dvc.lock (empty if nothing ran yet)."""
    path = Path(root) / "dvc.lock"
    if not path.exists():
        return {}
    return dict((yaml.safe_load(path.read_text()) or {}).get("stages") or {})


def _entry_hash(item: dict[str, Any]) -> str | None:
    return item.get("md5") or item.get("hash") or item.get("etag")


def stage_dep_paths(stage: DvcStage, stages: list[DvcStage]) -> tuple[list[str], list[str]]:
    """Split a stage's deps into (produced by another stage, plain files the user edits)."""
    produced = [o for s in stages if s.name != stage.name for o in s.outs]
    stage_deps = [d for d in stage.deps if any(_contains(o, d) or _contains(d, o) for o in produced)]
    file_deps = [d for d in stage.deps if d not in stage_deps]
    return stage_deps, file_deps


def code_version_from_parts(cmd: str, params: dict[str, Any], file_deps: dict[str, str | None]) -> str:
    """Hash of what defines a stage's computation: its command, param values and file dep hashes."""
    return _canonical_hash({"cmd": cmd, "params": params, "deps": file_deps})


def code_version_from_lock(stage: DvcStage, stages: list[DvcStage], entry: dict[str, Any]) -> str:
    """The code version of the run recorded in a dvc.lock entry."""
    _, file_deps = stage_dep_paths(stage, stages)
    hashes = {d["path"]: _entry_hash(d) for d in entry.get("deps", []) if d["path"] in file_deps}
    return code_version_from_parts(entry.get("cmd", ""), entry.get("params", {}), hashes)


def code_versions_from_workspace(root: Path | str, stages: list[DvcStage]) -> dict[str, str]:
    """Each stage's code version as the workspace defines it now (file hashes computed by DVC)."""
    from dvc.repo import Repo

    root = Path(root)
    versions = {}
    with Repo(str(root)) as repo:
        dvc_stages = {getattr(s, "name", None): s for s in repo.index.stages}
        for stage in stages:
            _, file_deps = stage_dep_paths(stage, stages)
            hashes: dict[str, str | None] = {}
            params: dict[str, Any] = {}
            for dep in dvc_stages[stage.name].deps:
                rel = _rel(root, dep.fs_path)
                if type(dep).__name__ == "ParamsDependency":
                    try:
                        params[rel] = dep.read_params()
                    except Exception:  # a missing or broken params file: cannot be up to date
                        params[rel] = None
                elif rel in file_deps:
                    try:
                        hashes[rel] = dep.get_hash().value if dep.exists else None
                    except Exception:
                        hashes[rel] = None
            versions[stage.name] = code_version_from_parts(stage.cmd, params, hashes)
    return versions


def data_version_from_lock(entry: dict[str, Any] | None) -> str | None:
    """Hash of a stage's output hashes as dvc.lock records them (None if it never ran)."""
    if not entry or not entry.get("outs"):
        return None
    return _canonical_hash(sorted((o["path"], _entry_hash(o)) for o in entry["outs"]))


def input_versions_from_lock(
    stage: DvcStage, stages: list[DvcStage], entry: dict[str, Any]
) -> dict[str, str]:
    """For each upstream stage, the data version of the outputs this run consumed (from its deps)."""
    consumed = {d["path"]: _entry_hash(d) for d in entry.get("deps", [])}
    versions = {}
    for up_name in stage.upstream:
        up = next(s for s in stages if s.name == up_name)
        used = [(o, consumed[o]) for o in up.outs if o in consumed]
        if used and len(used) == len(up.outs):
            versions[up_name] = _canonical_hash(sorted(used))
    return versions


def lock_entry_hash(entry: dict[str, Any] | None) -> str | None:
    """Hash of a whole dvc.lock entry: what the sensor compares with what Dagster last recorded."""
    return _canonical_hash(entry) if entry else None
