"""Training features of the train stage: resume after a kill, packing, early stopping, dvclive curves,
LoRA on a local pretrained model, and the validation of the new params."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
import torch
import yaml
from tiny_recipe import REPO_ROOT, TINY_TRAIN, recipe, train_params
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, GPT2LMHeadModel, TrainerCallback

from dagster_project.params_schema import ParamsError, validate_params
from dagster_project.stages import train
from dagster_project.stages.common import RUN_FACTS_DIR
from dagster_project.student.checkpoints import CHECKPOINT_ROOT_ENV, last_checkpoint, run_fingerprint
from dagster_project.student.collate import make_collator
from dagster_project.student.data import IGNORE_INDEX, encode_example, encode_examples, token_ids
from dagster_project.student.fast_kernels import plain_lm_head
from dagster_project.student.model import PAD_TOKEN, compile_blocks, train_tokenizer
from dagster_project.student.prompt_format import PromptFormat
from dagster_project.student.trainer import Curves, StudentTrainer, completion_loss

__all__ = ["recipe"]  # the fixture: a recipe folder with tiny data, cwd = it


def _train_rows(recipe: Path) -> list[dict]:
    return pl.read_parquet(recipe / "assets/deduped/train.parquet").to_dicts()


def _val_rows(recipe: Path) -> list[dict]:
    return pl.read_parquet(recipe / "assets/deduped/val.parquet").to_dicts()


# --- resume ------------------------------------------------------------------------------------------


def test_killed_training_resumes_from_its_last_checkpoint(recipe: Path) -> None:
    params = yaml.safe_load((recipe / "params.yaml").read_text())
    # 24 rows / batch 4 = 6 steps an epoch; 60 steps, a checkpoint every 10.
    params["train"].update(epochs=10, save_steps=10)
    (recipe / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    ckpts = recipe / "ckpts"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), CHECKPOINT_ROOT_ENV: str(ckpts)}
    cmd = [sys.executable, "-m", "dagster_project.stages.train"]
    cmd += ["--params", "params.yaml", "--data", "assets/deduped", "--out", "assets/student"]

    first = subprocess.Popen(cmd, cwd=recipe, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 600
    while time.time() < deadline and first.poll() is None:
        if any(last_checkpoint(d) for d in ckpts.glob("*")):
            break
        time.sleep(0.05)
    assert first.poll() is None, "finished before the kill:\n" + first.stdout.read().decode()
    first.send_signal(signal.SIGKILL)
    first.wait()
    (run_dir,) = ckpts.glob("*")
    killed_at = int(last_checkpoint(run_dir).name.split("-")[-1])
    assert 10 <= killed_at < 60
    assert not (recipe / "assets/student").exists()  # nothing half-written in the DVC output

    second = subprocess.run(cmd, cwd=recipe, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stdout + second.stderr
    resumed_at = int(second.stdout.split("resumed from ")[1].split("(step ")[1].split(")")[0])
    assert resumed_at >= killed_at  # the newest complete checkpoint (one more may land before the kill)
    log = json.loads((recipe / "assets/student/train_log.json").read_text())
    assert log["resumed_from_step"] == resumed_at and log["steps"] == 60
    assert all(h["step"] > resumed_at for h in log["loss_history"])  # this run's steps continue from there
    loss_tsv = recipe / "assets/student/dvclive/plots/metrics/train/loss.tsv"
    header, *lines = loss_tsv.read_text().splitlines()
    steps = [int(line.split("\t")[header.split("\t").index("step")]) for line in lines]
    assert steps == sorted(set(steps)) and steps[0] < resumed_at < steps[-1]  # one curve across the kill
    assert not run_dir.exists()  # checkpoints are deleted after success


def test_resume_gives_the_uninterrupted_result(recipe: Path) -> None:
    rows = _train_rows(recipe)
    params = train_params(epochs=2, save_steps=4)  # 12 steps, checkpoints at 4, 8, 12
    whole = train.train_student(rows, [], params, recipe / "whole", checkpoint_root=recipe / "c1")
    # A run "killed" right after its checkpoint at step 8.
    fingerprint = run_fingerprint(params, rows, [], code=[Path(train.__file__)])

    class Kill(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):  # noqa: ANN001
            if state.global_step == 8:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train.train_student(
            rows, [], params, recipe / "killed", checkpoint_root=recipe / "c2", callbacks=[Kill()]
        )
    assert last_checkpoint(recipe / "c2" / fingerprint).name == "checkpoint-8"
    resumed = train.train_student(rows, [], params, recipe / "resumed", checkpoint_root=recipe / "c2")
    assert resumed["resumed_from_step"] == 8
    assert resumed["final_logged_loss"] == pytest.approx(whole["final_logged_loss"], rel=1e-5)
    a = AutoModelForCausalLM.from_pretrained(recipe / "whole").state_dict()
    b = AutoModelForCausalLM.from_pretrained(recipe / "resumed").state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_a_checkpoint_of_other_params_is_not_resumed(recipe: Path) -> None:
    rows = _train_rows(recipe)
    a = run_fingerprint(train_params(), rows, [])
    assert a == run_fingerprint(train_params(), rows, [])
    assert a != run_fingerprint(train_params(learning_rate=0.001), rows, [])
    assert a != run_fingerprint(train_params(), rows[1:], [])
    assert a != run_fingerprint(train_params(), rows, [], code=[Path(train.__file__)])  # the stage's code
    (recipe / "c" / "checkpoint-5").mkdir(parents=True)  # cut short by a kill: no trainer_state.json
    assert last_checkpoint(recipe / "c") is None
    (recipe / "c" / "checkpoint-3").mkdir()
    (recipe / "c" / "checkpoint-3" / "trainer_state.json").write_text("{}")
    assert last_checkpoint(recipe / "c").name == "checkpoint-3"


def test_resume_survives_curves_torn_by_the_kill(tmp_path: Path) -> None:
    """A kill during dvclive's write leaves a torn summary and a torn last row: resume cleans both."""
    live = tmp_path / "dvclive"
    curve = live / "plots/metrics/train/loss.tsv"
    curve.parent.mkdir(parents=True)
    curve.write_text("timestamp\tstep\tloss\n1\t5\t2.0\n2\t10\t1.5\n3\t15\t1.2\n4\t2")
    (live / "plots/metrics/train/lr.tsv").write_text("times")  # torn inside the header
    (live / "metrics.json").write_text('{"train": {"loss": 1.')
    callback = Curves(live, resume_step=10)
    callback.on_train_begin(None, type("S", (), {"is_world_process_zero": True})(), None)
    callback.live.end()
    assert curve.read_text() == "timestamp\tstep\tloss\n1\t5\t2.0\n2\t10\t1.5\n"
    assert not (live / "plots/metrics/train/lr.tsv").exists()


# --- determinism, packing, schedule, accumulation -------------------------------------------------------


def test_packed_training_is_deterministic(recipe: Path) -> None:
    rows = _train_rows(recipe)
    params = train_params(epochs=1, packing=True, gradient_accumulation_steps=2, lr_scheduler="linear")
    first = train.train_student(rows, [], params, recipe / "a")
    second = train.train_student(rows, [], params, recipe / "b")
    assert first["train_loss"] == second["train_loss"] and first["packing"] and first["steps"] == 3
    assert (recipe / "a/model.safetensors").read_bytes() == (recipe / "b/model.safetensors").read_bytes()


def test_gradient_accumulation_averages_micro_batches(recipe: Path) -> None:
    """N accumulated micro-batches of B give the loss scale of one batch of N x B, not N times it."""
    rows = _train_rows(recipe)
    base = dict(epochs=1, save_steps=0, lr_scheduler="constant_with_warmup", warmup_ratio=0.0)
    whole = train.train_student(rows, [], train_params(**base, batch_size=8), recipe / "a")
    accumulated = train.train_student(
        rows, [], train_params(**base, batch_size=4, gradient_accumulation_steps=2), recipe / "b"
    )
    first_whole, first_accumulated = whole["loss_history"][0]["loss"], accumulated["loss_history"][0]["loss"]
    assert first_accumulated == pytest.approx(first_whole, rel=0.1)  # the bug made it ~2x


def test_packing_keeps_completion_labels_and_example_boundaries() -> None:
    texts = [f"Context: town {i} on the river\nQuestion: which?\nAnswer: river {i}" for i in range(8)]
    tokenizer = train_tokenizer(texts, vocab_size=300)
    rows = [{"context": f"Town {i} lies on the river Ka{i}.", "question": "Which river?"} for i in range(5)]
    rows = [r | {"answer": f"Ka{i}"} for i, r in enumerate(rows)]
    examples = [encode_example(tokenizer, r, max_length=64) for r in rows]
    batch = [{k: ex[k] for k in ("input_ids", "labels", "n_prompt")} for ex in examples]
    longest = max(len(ex["input_ids"]) for ex in batch)
    packed = make_collator(tokenizer.pad_token_id, packing=True, max_length=2 * longest + 1)(batch)
    plain = make_collator(tokenizer.pad_token_id)(batch)
    assert packed["input_ids"].shape[0] < len(batch) and "attention_mask" not in packed
    assert int(packed["n_tokens"]) == int(plain["n_tokens"]) == sum(len(ex["input_ids"]) for ex in batch)

    # Every example appears whole in some packed row: positions restart at 0, labels only on its answer.
    found = 0
    for r in range(packed["input_ids"].shape[0]):
        ids, labels, pos = (packed[k][r].tolist() for k in ("input_ids", "labels", "position_ids"))
        starts = [i for i, p in enumerate(pos) if p == 0]
        for s, e in zip(starts, starts[1:] + [len(pos)], strict=True):
            segment = ids[s:e]
            match = [ex for ex in batch if ex["input_ids"] == segment]
            if not match:  # the trailing padding segment
                assert set(segment) == {tokenizer.pad_token_id} and set(labels[s:e]) == {IGNORE_INDEX}
                continue
            found += 1
            assert labels[s:e] == match[0]["labels"]
            supervised = [t for t, lab in zip(segment, labels[s:e], strict=True) if lab != IGNORE_INDEX]
            assert tokenizer.decode(supervised).startswith(" Ka")
            assert packed["prompt_mask"][r, s] == 0  # the first token of an example is never a target
    assert found == len(batch)

    # No attention across example boundaries: the packed batch has the unpacked batch's loss.
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=256, n_embd=32, n_layer=2, n_head=2)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(config).eval()
    trainer = StudentTrainer.__new__(StudentTrainer)
    trainer.prompt_loss_weight, trainer.tokens_seen, trainer._loss_fn = 1.0, 0, completion_loss
    trainer._lm_head = None
    model.train()  # the prompt term counts only in training; dropout is 0 in eval below
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    with torch.no_grad():
        loss_packed = trainer.compute_loss(model, dict(packed))
        loss_plain = trainer.compute_loss(model, dict(plain))
        trainer._lm_head = plain_lm_head(model)  # the fused output projection + loss of CPU training
        loss_packed_fused = trainer.compute_loss(model, dict(packed))
    assert loss_packed.item() == pytest.approx(loss_plain.item(), rel=1e-5)
    assert loss_packed_fused.item() == pytest.approx(loss_plain.item(), rel=1e-5)


# --- early stopping, curves ---------------------------------------------------------------------------


def test_early_stopping_on_val_loss_and_dvclive_curves(recipe: Path) -> None:
    rows, val = _train_rows(recipe), _val_rows(recipe)
    # A learning rate so high the val loss gets worse: stops after `patience` evaluations without a gain.
    params = train_params(epochs=20, learning_rate=0.5, eval_steps=2, early_stopping_patience=2)
    log = train.train_student(rows, val, params, recipe / "out")
    assert log["stopped_early"] and log["steps"] < log["planned_steps"] == 120
    assert log["eval_history"] and log["best_step"] is not None
    best = min(e["eval_loss"] for e in log["eval_history"])
    assert log["val_loss"] == pytest.approx(best, rel=1e-4)  # the best model is the one saved
    curves = recipe / "out" / "dvclive"
    for name in ("train/loss.tsv", "train/learning_rate.tsv", "eval/loss.tsv"):
        assert (curves / "plots/metrics" / name).exists(), name
    assert json.loads((curves / "metrics.json").read_text())["train"]["loss"] > 0
    assert not list((recipe / ".cache/train-checkpoints").glob("*"))  # cleaned up


@pytest.mark.parametrize("scheduler", ["cosine", "linear"])
def test_schedule_with_warmup_and_a_progress_bar_with_tokens_per_s(
    recipe: Path, scheduler: str, capfd: pytest.CaptureFixture[str]
) -> None:
    params = train_params(epochs=5, lr_scheduler=scheduler, warmup_ratio=0.1, save_steps=0)
    log = train.train_student(_train_rows(recipe), [], params, recipe / "out")
    total = log["planned_steps"]
    warmup = math.ceil(0.1 * total)
    assert (total, warmup) == (30, 3)  # 24 rows / batch 4 = 6 steps an epoch, 5 epochs

    def expected(step: int) -> float:  # the learning rate optimizer step `step` (1-based) trained with
        done = step - 1
        if done < warmup:
            return done / warmup
        progress = (done - warmup) / (total - warmup)
        return 0.5 * (1 + math.cos(math.pi * progress)) if scheduler == "cosine" else 1 - progress

    logged = [(h["step"], h["learning_rate"]) for h in log["loss_history"]]
    assert [s for s, _ in logged] == list(range(1, total + 1))  # under 50 steps, every step is logged
    for step, lr in logged:
        assert lr == pytest.approx(TINY_TRAIN["learning_rate"] * expected(step), abs=1e-9), step
    # The bar (stderr) shows steps and ETA, and the latest tokens/s and loss beside them.
    frames = capfd.readouterr().err.split("\r")
    last = [f for f in frames if f"{total}/{total} [" in f][-1]  # e.g. 30/30 [00:01<00:00, ..., tokens/s=...]
    assert "<00:00" in last and "tokens/s=" in last and "loss=" in last


# --- a local pretrained model, LoRA -----------------------------------------------------------------


def _tiny_pretrained(path: Path, rows: list[dict]) -> Path:
    texts = [PromptFormat().prompt(r) + PromptFormat().completion(r) for r in rows]
    tokenizer = train_tokenizer(texts, vocab_size=300)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=128, n_embd=32, n_layer=1, n_head=2)
    GPT2LMHeadModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_sft_of_a_local_pretrained_model(recipe: Path) -> None:
    rows = _train_rows(recipe)
    base = _tiny_pretrained(recipe / "base", rows)
    params = train_params(base_model=str(base), epochs=1, prompt_loss_weight=0.0)
    log = train.train_student(rows, _val_rows(recipe), params, recipe / "out")
    assert log["n_trainable_params"] == log["n_params"] and log["val_loss"] is not None
    model = AutoModelForCausalLM.from_pretrained(recipe / "out")
    assert model.config.n_embd == 32


def test_lora_trains_adapters_and_saves_a_merged_checkpoint(recipe: Path) -> None:
    pytest.importorskip("peft")
    rows = _train_rows(recipe)
    base = _tiny_pretrained(recipe / "base", rows)
    lora = {"enabled": True, "r": 4, "alpha": 8, "dropout": 0.0, "target_modules": None}
    params = train_params(base_model=str(base), epochs=1, lora=lora)
    log = train.train_student(rows, [], params, recipe / "out")
    assert 0 < log["n_trainable_params"] < log["n_params"] / 2
    merged = AutoModelForCausalLM.from_pretrained(recipe / "out")  # a plain checkpoint, no adapter files
    assert not (recipe / "out" / "adapter_config.json").exists()
    original = AutoModelForCausalLM.from_pretrained(base)
    key = "transformer.h.0.attn.c_attn.weight"
    assert not torch.equal(merged.state_dict()[key], original.state_dict()[key])  # adapters merged in
    key = "transformer.h.0.mlp.c_fc.weight"
    assert torch.equal(merged.state_dict()[key], original.state_dict()[key])  # the rest is frozen
    assert AutoTokenizer.from_pretrained(recipe / "out").pad_token is not None


# --- params --------------------------------------------------------------------------------------------


def _validate(recipe: Path, **train_overrides) -> None:  # noqa: ANN003
    params = yaml.safe_load((recipe / "params.yaml").read_text())
    params["train"].update(train_overrides)
    validate_params(params, root=recipe)


def test_new_train_params_are_validated(recipe: Path) -> None:
    _validate(recipe)  # all optional: the old section is valid
    repo = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())["train"]
    assert set(train.Params.model_fields) == set(repo)  # params.yaml lists every key
    _validate(recipe, packing=True, lr_scheduler="linear", eval_steps=5, early_stopping_patience=2)
    with pytest.raises(ParamsError, match="lr_scheduler"):
        _validate(recipe, lr_scheduler="cosine_annealing")
    with pytest.raises(ParamsError, match="gradient_accumulation_steps"):
        _validate(recipe, gradient_accumulation_steps=0)
    with pytest.raises(ParamsError, match="precision"):
        _validate(recipe, precision="fp8")
    with pytest.raises(ParamsError, match="eval_steps"):
        _validate(recipe, early_stopping_patience=3)
    with pytest.raises(ParamsError, match="lora"):
        _validate(recipe, lora={"enabled": True, "rank": 8})


def test_compile_blocks_compiles_each_block_in_place() -> None:
    """Regional compilation: same outputs, same state_dict keys (the checkpoint stays loadable)."""
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_head=2, n_embd=32, vocab_size=100, n_positions=64)).eval()
    ids = torch.randint(0, 100, (2, 16))
    expected, keys = model(input_ids=ids, use_cache=False).logits, list(model.state_dict())
    assert compile_blocks(model) == 2
    assert torch.allclose(model(input_ids=ids, use_cache=False).logits, expected, atol=1e-5)
    assert list(model.state_dict()) == keys


# --- several processes (DDP) ---------------------------------------------------------------------------


@pytest.mark.parametrize("launcher", ["torchrun", "accelerate"])
def test_two_process_ddp_training_on_cpu_writes_one_checkpoint(recipe: Path, launcher: str) -> None:
    """The N-GPU path (`torchrun -m dagster_project.stages.train`, or `accelerate launch -m ...`), run as
    2 CPU processes over gloo: both ranks train in step, only rank 0 writes the output, and the log counts
    the world size."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    if launcher == "torchrun":
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
        cmd += ["--master-port", str(port)]
    else:  # accelerate's multi-process launcher; its processes train over gloo here (`--cpu` starts one)
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
        cmd += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
        cmd += ["--main_process_port", str(port)]
    cmd += ["-m", "dagster_project.stages.train", "--params", "params.yaml"]
    cmd += ["--data", "assets/deduped", "--out", "assets/student"]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    proc = subprocess.run(cmd, cwd=recipe, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = json.loads((recipe / "assets/student/train_log.json").read_text())
    assert log["world_size"] == 2 and log["steps"] > 0
    # Each rank sees half of every global batch: 24 examples x 2 epochs / (4 x 2) = 6 optimizer steps.
    assert log["steps"] == 6
    assert AutoModelForCausalLM.from_pretrained(recipe / "assets/student") is not None
    # No second (rank 1) output, no temp folder left behind; `.runs/` holds the (git-ignored) run facts.
    kept = {"deduped", "student", RUN_FACTS_DIR}
    leftovers = [p.name for p in (recipe / "assets").iterdir() if p.name not in kept]
    assert leftovers == []
    assert sorted(p.name for p in (recipe / "assets" / RUN_FACTS_DIR).iterdir()) == ["student.json"]


def test_batched_token_ids_never_pad_and_take_empty_input() -> None:
    texts = ["Context: the river Ka\nQuestion: which?\nAnswer:", " Ka", "a much longer text " * 5]
    tokenizer = train_tokenizer(texts * 4, vocab_size=300)
    one_by_one = [tokenizer.backend_tokenizer.encode(t, add_special_tokens=False).ids for t in texts]
    assert token_ids(tokenizer, texts) == one_by_one
    # A pretrained tokenizer.json can come with padding switched on: ids must still be unpadded.
    tokenizer.backend_tokenizer.enable_padding(pad_id=tokenizer.pad_token_id, pad_token=PAD_TOKEN)
    assert token_ids(tokenizer, texts) == one_by_one
    assert tokenizer.backend_tokenizer.padding is not None  # the caller's tokenizer is left as it was
    # Nor truncated from the right (a prompt is cut from the left, by encode_examples).
    truncating = train_tokenizer(texts * 4, vocab_size=300)
    truncating.backend_tokenizer.enable_truncation(max_length=3)
    assert token_ids(truncating, texts) == one_by_one
    assert token_ids(tokenizer, []) == [] and encode_examples(tokenizer, [], 64) == []
