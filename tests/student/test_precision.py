"""Generation in bf16 where the hardware computes in it (a GPU, or a CPU with native bf16: avx512_bf16 /
amx_bf16), fp32 elsewhere; training in bf16 only on a GPU, said out loud."""

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from dagster_project.evaluation import generate
from dagster_project.student import model as student_model


@pytest.fixture
def tiny_checkpoint(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({"<unk>": 0, "a": 1, "b": 2}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>").save_pretrained(tmp_path)
    GPT2LMHeadModel(GPT2Config(vocab_size=3, n_embd=8, n_layer=1, n_head=1, n_positions=16)).save_pretrained(
        tmp_path
    )
    return tmp_path


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU paths")
def test_bf16_on_a_cpu_follows_its_native_support(tiny_checkpoint, monkeypatch, capsys):
    monkeypatch.setattr(student_model, "cpu_has_bf16", lambda: True)
    model, _ = generate.load_student(tiny_checkpoint, "bf16")
    assert model.dtype == torch.bfloat16
    assert generate.load_student(tiny_checkpoint, "auto")[0].dtype == torch.float32

    monkeypatch.setattr(student_model, "cpu_has_bf16", lambda: False)
    assert generate.load_student(tiny_checkpoint, "bf16")[0].dtype == torch.float32
    assert student_model.precision_flags("bf16") == {"bf16": False, "fp16": False}  # training: GPUs only
    assert "no GPU: training in fp32" in capsys.readouterr().out


def test_cpu_flags_are_read_from_cpuinfo():
    flags = open("/proc/cpuinfo").read() if __import__("os").path.exists("/proc/cpuinfo") else ""
    expected = "avx512_bf16" in flags.split() or "amx_bf16" in flags.split()
    assert student_model.cpu_has_bf16() == expected
