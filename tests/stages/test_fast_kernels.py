"""The fused kernels swapped into a student for training compute the same function as the originals."""

import copy

import torch
from transformers import GPT2Config, GPT2LMHeadModel
from transformers.activations import FastGELUActivation, GELUTanh, NewGELUActivation

from dagster_project.stages.fast_kernels import use_fused_kernels


def _tiny_gpt2(activation: str = "gelu_new") -> GPT2LMHeadModel:
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=97,
        n_positions=32,
        n_embd=32,
        n_layer=2,
        n_head=4,
        activation_function=activation,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    return GPT2LMHeadModel(config)


def test_tanh_gelus_are_replaced_by_the_fused_op_with_the_same_values_and_gradients() -> None:
    original = _tiny_gpt2()
    fused = copy.deepcopy(original)

    swapped = use_fused_kernels(fused)

    assert swapped == ["transformer.h.0.mlp.act", "transformer.h.1.mlp.act"]
    assert all(isinstance(block.mlp.act, GELUTanh) for block in fused.transformer.h)
    assert fused.state_dict().keys() == original.state_dict().keys()  # the checkpoint is unchanged
    assert fused.config.activation_function == "gelu_new"  # and so is the saved config
    ids = torch.randint(0, 97, (3, 20))
    out_original = original(input_ids=ids, labels=ids)
    out_fused = fused(input_ids=ids, labels=ids)
    torch.testing.assert_close(out_fused.logits, out_original.logits, rtol=0, atol=1e-5)
    out_original.loss.backward()
    out_fused.loss.backward()
    for (name, p_original), p_fused in zip(original.named_parameters(), fused.parameters(), strict=True):
        torch.testing.assert_close(p_fused.grad, p_original.grad, rtol=1e-4, atol=1e-6, msg=name)
    assert use_fused_kernels(fused) == []  # nothing left to swap


def test_each_tanh_gelu_form_matches_the_fused_op_over_a_wide_range() -> None:
    x = torch.linspace(-12, 12, 20001, dtype=torch.float64)
    for module in (NewGELUActivation(), FastGELUActivation()):
        torch.testing.assert_close(module(x), GELUTanh()(x), rtol=0, atol=1e-9)


def test_other_activations_are_left_alone() -> None:
    model = _tiny_gpt2("relu")
    before = [type(m) for m in model.modules()]
    assert use_fused_kernels(model) == []
    assert [type(m) for m in model.modules()] == before
