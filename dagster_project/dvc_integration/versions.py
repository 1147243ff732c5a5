"""Versions from DVC's ledger: each recipe's dvc.lock, read with repo-relative paths, and the hashes
Dagster compares.

The same function applied to the workspace (at definition load) and to dvc.lock (in the sensor) agree
exactly when DVC says the stage is up to date:
- an asset's code version = hash of its stage's command, param values and non-stage file deps;
- its data version = hash of its output hashes in dvc.lock.
"""

import hashlib
import json
import posixpath
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from dagster_project.dvc_integration.project import DvcStage, Recipe, is_params_dep, overlaps, repo_relative


def _canonical_hash(obj: Any) -> str:
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _to_repo_path(wdir: str, path: str) -> str:
    """A path as dvc.lock records it (relative to the stage's folder) made relative to the repo root."""
    if "://" in path or posixpath.isabs(path):
        return path
    return posixpath.normpath(posixpath.join(wdir, path))


def _repo_relative_entry(stage: DvcStage, entry: dict[str, Any]) -> dict[str, Any]:
    entry = dict(entry)
    for section in ("deps", "outs"):
        if section in entry:
            entry[section] = [
                {**item, "path": _to_repo_path(stage.wdir, item["path"])} for item in entry[section] or []
            ]
    if "params" in entry:
        entry["params"] = {_to_repo_path(stage.wdir, f): v for f, v in (entry["params"] or {}).items()}
    return entry


def read_lock(root: Path | str, recipe: Recipe) -> dict[str, dict[str, Any]]:
    """Stage name -> the recipe's dvc.lock entry with every path relative to the repo root (empty if the
    recipe never ran). Entries of stages no longer in dvc.yaml are left out."""
    path = Path(root) / recipe.dvc_lock
    if not path.exists():
        return {}
    raw = dict((yaml.safe_load(path.read_text()) or {}).get("stages") or {})
    stages = {s.name: s for s in recipe.stages}
    return {name: _repo_relative_entry(stages[name], entry) for name, entry in raw.items() if name in stages}


def _entry_hash(item: dict[str, Any]) -> str | None:
    return item.get("md5") or item.get("hash") or item.get("etag")


def stage_dep_paths(stage: DvcStage, stages: Iterable[DvcStage]) -> tuple[list[str], list[str]]:
    """Split a stage's deps into (produced by another stage of its recipe, plain files the user edits)."""
    produced = [o for s in stages if s.name != stage.name for o in s.outs]
    stage_deps = [d for d in stage.deps if any(overlaps(o, d) for o in produced)]
    file_deps = [d for d in stage.deps if d not in stage_deps]
    return stage_deps, file_deps


def code_version_from_parts(cmd: str, params: dict[str, Any], file_deps: dict[str, str | None]) -> str:
    """Hash of what defines a stage's computation: its command, param values and file dep hashes."""
    return _canonical_hash({"cmd": cmd, "params": params, "deps": file_deps})


def code_version_from_lock(stage: DvcStage, stages: Iterable[DvcStage], entry: dict[str, Any]) -> str:
    """The code version of the run recorded in a (repo-relative) dvc.lock entry."""
    _, file_deps = stage_dep_paths(stage, stages)
    hashes = {d["path"]: _entry_hash(d) for d in entry.get("deps", []) if d["path"] in file_deps}
    return code_version_from_parts(entry.get("cmd", ""), entry.get("params", {}), hashes)


def code_versions_from_workspace(
    root: Path, stages: list[DvcStage], dvc_stages: Iterable[Any]
) -> dict[str, str]:
    """Each stage's code version as the workspace defines it now (file hashes computed by DVC), from
    the DVC stage objects of one dvc.yaml (collected with the repo still open)."""
    by_name = {getattr(s, "name", None): s for s in dvc_stages}
    versions = {}
    for stage in stages:
        _, file_deps = stage_dep_paths(stage, stages)
        hashes: dict[str, str | None] = {}
        params: dict[str, Any] = {}
        for dep in by_name[stage.name].deps:
            rel = repo_relative(root, dep.fs_path)
            if is_params_dep(dep):
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
    stage: DvcStage,
    stages: Iterable[DvcStage],
    entry: dict[str, Any],
    lock: dict[str, dict[str, Any]] | None = None,
    root: Path | str | None = None,
) -> dict[str, str]:
    """For each upstream stage, the data version of the outputs this run consumed (from its deps).

    A stage that depends on an upstream's whole outputs consumed exactly what their hashes say. A stage
    that depends on files inside an upstream's output folder (`assets/deduped/train.parquet` of
    `assets/deduped`) consumed the upstream's version recorded in `lock` when each such file's hash
    equals the file's hash in that version (read from the folder's manifest in DVC's cache, else from
    the workspace file); otherwise the consumed hashes themselves, which match no version of the
    upstream (so Dagster shows the stage stale, as DVC does)."""
    by_name = {s.name: s for s in stages}
    consumed = {d["path"]: _entry_hash(d) for d in entry.get("deps", [])}
    versions = {}
    for up_name in stage.upstream:
        up = by_name[up_name]
        used = [(o, consumed[o]) for o in up.outs if o in consumed]
        if used and len(used) == len(up.outs):
            versions[up_name] = _canonical_hash(sorted(used))
            continue
        inside = sorted((d, h) for d, h in consumed.items() if any(_inside(o, d) and d != o for o in up.outs))
        if not inside and not used:
            continue
        up_entry = (lock or {}).get(up_name)
        current = data_version_from_lock(up_entry)
        if current and root is not None and _files_match(Path(root), up_entry, [*used, *inside]):
            versions[up_name] = current
        else:
            versions[up_name] = _canonical_hash([*sorted(used), *inside])
    return versions


def _inside(folder: str, path: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def _files_match(root: Path, up_entry: dict[str, Any] | None, consumed: list[tuple[str, Any]]) -> bool:
    """Whether every consumed (path, hash) is what the upstream's lock entry recorded for that path."""
    outs = {o["path"]: _entry_hash(o) for o in (up_entry or {}).get("outs", [])}
    for path, digest in consumed:
        if path in outs:
            if outs[path] != digest:
                return False
            continue
        folder = next((o for o in outs if _inside(o, path)), None)
        if folder is None or digest is None:
            return False
        recorded = _manifest_hash(root, outs[folder], posixpath.relpath(path, folder))
        if recorded is None:  # no manifest in the cache: the workspace file as it is now
            recorded = _file_md5(root / path)
        if recorded != digest:
            return False
    return True


def _cache_dir(root: Path) -> Path:
    """DVC's cache folder as the repo's config (and its local config) sets it, read without DVC."""
    import configparser

    cache = root / ".dvc" / "cache"
    for name in ("config", "config.local"):
        parser = configparser.ConfigParser()
        try:
            parser.read(root / ".dvc" / name)
        except configparser.Error:
            continue
        if parser.has_option("cache", "dir"):
            cache = (root / ".dvc" / parser.get("cache", "dir")).resolve()
    return cache


def _manifest_hash(root: Path, dir_hash: str | None, relpath: str) -> str | None:
    """The md5 of `relpath` in the folder whose `.dir` manifest has `dir_hash` (None if not cached)."""
    if not dir_hash or not dir_hash.endswith(".dir"):
        return None
    for path in (
        _cache_dir(root) / "files" / "md5" / dir_hash[:2] / dir_hash[2:],
        _cache_dir(root) / dir_hash[:2] / dir_hash[2:],  # DVC 2 layout
    ):
        if path.exists():
            try:
                manifest = json.loads(path.read_text())
            except (OSError, ValueError):
                return None
            for item in manifest:
                if item.get("relpath") == relpath:
                    return item.get("md5")
            return None
    return None


def _file_md5(path: Path) -> str | None:
    if not path.is_file():
        return None
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def lock_entry_hash(entry: dict[str, Any] | None) -> str | None:
    """Hash of a whole dvc.lock entry: what the sensor compares with what Dagster last recorded."""
    return _canonical_hash(entry) if entry else None
