"""The fused kernels swapped into a student for training compute the same function as the originals."""

import copy

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel
from transformers.activations import FastGELUActivation, GELUTanh, NewGELUActivation

from dagster_project.student import fast_kernels
from dagster_project.student.fast_kernels import use_fused_kernels


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


# --- the output projection fused with the loss ------------------------------------------------------


def _reference(hidden, weight, targets, row_weights):  # noqa: ANN001, ANN202
    losses = torch.nn.functional.cross_entropy(hidden @ weight.T, targets, reduction="none")
    return (losses * row_weights).sum()


@pytest.mark.parametrize("chunk_bytes", [None, 4 * 97 * 5])  # one chunk; chunks of 5 rows (and a remainder)
def test_linear_cross_entropy_has_the_value_and_gradients_of_the_logits_path(
    monkeypatch, chunk_bytes
) -> None:  # noqa: ANN001
    if chunk_bytes:
        monkeypatch.setattr(fast_kernels, "_CHUNK_BYTES", chunk_bytes)
    torch.manual_seed(0)
    hidden = torch.randn(23, 16, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(97, 16, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 97, (23,))
    row_weights = torch.rand(23, dtype=torch.float64)
    row_weights[[0, 7, 8, 22]] = 0  # padding, say: skipped rows get no gradient

    got = fast_kernels.linear_cross_entropy(hidden, weight, targets, row_weights) * 3.0  # a scaled upstream
    got.backward()
    grads = hidden.grad.clone(), weight.grad.clone()
    hidden.grad, weight.grad = None, None
    want = _reference(hidden, weight, targets, row_weights) * 3.0
    want.backward()

    torch.testing.assert_close(got, want, rtol=1e-12, atol=0)
    torch.testing.assert_close(grads[0], hidden.grad, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(grads[1], weight.grad, rtol=1e-9, atol=1e-12)
    assert grads[0][[0, 7, 8, 22]].abs().sum() == 0


def test_plain_lm_head_is_found_for_gpt2_and_inside_peft_but_not_for_other_heads() -> None:
    model = _tiny_gpt2()
    decoder, weight = fast_kernels.plain_lm_head(model)
    assert decoder is model.transformer and weight is model.lm_head.weight
    ids = torch.randint(0, 97, (2, 9))
    torch.testing.assert_close(
        decoder(input_ids=ids).last_hidden_state @ weight.T, model(input_ids=ids).logits
    )

    from peft import LoraConfig, get_peft_model

    wrapped = get_peft_model(_tiny_gpt2(), LoraConfig(r=2, target_modules=["c_attn"], task_type="CAUSAL_LM"))
    assert fast_kernels.plain_lm_head(wrapped)[1] is wrapped.get_base_model().lm_head.weight
    head_adapted = get_peft_model(
        _tiny_gpt2(), LoraConfig(r=2, target_modules=["lm_head"], task_type="CAUSAL_LM")
    )
    assert fast_kernels.plain_lm_head(head_adapted) is None  # the head is not a plain Linear any more
    assert fast_kernels.plain_lm_head(torch.nn.Linear(3, 3)) is None


def test_linear_cross_entropy_with_a_frozen_head_gives_the_hidden_gradient_only() -> None:
    torch.manual_seed(1)
    hidden = torch.randn(9, 8, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(31, 8, dtype=torch.float64)  # frozen, as under LoRA
    targets, row_weights = torch.randint(0, 31, (9,)), torch.rand(9, dtype=torch.float64)
    fast_kernels.linear_cross_entropy(hidden, weight, targets, row_weights).backward()
    got = hidden.grad.clone()
    hidden.grad = None
    _reference(hidden, weight, targets, row_weights).backward()
    torch.testing.assert_close(got, hidden.grad)
    assert weight.grad is None
