"""The train and evaluate stages on a tiny grounded-QA dataset: a loadable checkpoint, the report files,
and each stage reading exactly its own params section."""

import json
import random
import shutil
import sys
from pathlib import Path

import polars as pl
import pytest
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer

from dagster_project.stages import common, evaluate, train
from dagster_project.stages.prompt_format import PromptFormat

REPO_ROOT = Path(__file__).resolve().parents[2]

TINY_TRAIN = {
    "base_model": None,
    "vocab_size": 300,
    "n_layer": 1,
    "n_head": 2,
    "n_embd": 16,
    "max_length": 96,
    "epochs": 2,
    "batch_size": 4,
    "learning_rate": 0.005,
    "warmup_ratio": 0.1,
    "prompt_loss_weight": 0.1,
    "answer_swap_prob": 0.5,
    "seed": 0,
}
TINY_EVALUATE = {
    "gold_test": "data/gold_test.jsonl",
    "task": "qa",
    "labels": [],
    "max_new_tokens": 4,
    "batch_size": 8,
    "teacher_reference": False,
    "teacher_model": "offline-teacher",
    "reference_prompt": "prompts/reference_answer.yaml",
    "judge_prompt": "prompts/judge_success.yaml",
    "bootstrap_resamples": 200,
    "seed": 0,
    "diversity": {
        "max_texts": 50,
        "embedding": "tfidf",
        "embedding_model": None,
        "reference_texts": None,
        "label_column": None,
    },
}


def _rows(n: int, seed: int) -> list[dict[str, str]]:
    """Fictional towns with a founding year and a river; questions whose answers are context spans."""
    rng = random.Random(seed)
    syllables = ["ka", "lo", "mir", "zor", "vath", "tel", "ran", "bel", "dor", "fen"]
    rows = []
    for i in range(n):
        town = "".join(rng.choice(syllables) for _ in range(2)).capitalize()
        river = "".join(rng.choice(syllables) for _ in range(2)).capitalize() + " River"
        year = str(rng.randint(900, 1900))
        context = f"{town} is a town on the {river}. It was founded in {year}."
        question, answer, category = rng.choice(
            [(f"When was {town} founded?", year, "year"), (f"Which river flows past {town}?", river, "river")]
        )
        rows.append(
            {"id": f"r{seed}-{i}", "passage_id": f"p{i}", "context": context, "question": question}
            | {"answer": answer, "category": category}
        )
    return rows


@pytest.fixture
def recipe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A recipe folder with a valid params.yaml (tiny train/evaluate sections) and tiny data; cwd = it."""
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    params["train"] = dict(TINY_TRAIN)
    params["evaluate"] = dict(TINY_EVALUATE)
    # Files params.yaml must name for validation to pass (their content is irrelevant here).
    params["synthesize"]["prompt"] = "prompt.yaml"
    params["retrieve"]["queries"] = "queries.txt"
    params["retrieve"]["sources"] = [{"path": "passages.jsonl", "format": "jsonl", "text_field": "text"}]
    for name in ("prompt.yaml", "queries.txt", "passages.jsonl"):
        (tmp_path / name).write_text("")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    data = tmp_path / "assets" / "deduped"
    data.mkdir(parents=True)
    pl.DataFrame(_rows(24, seed=1)).drop("category").write_parquet(data / "train.parquet")
    pl.DataFrame(_rows(4, seed=2)).drop("category").write_parquet(data / "val.parquet")
    (tmp_path / "data").mkdir()
    gold = [{k: r[k] for k in ("id", "context", "question", "answer", "category")} for r in _rows(6, seed=3)]
    (tmp_path / "data" / "gold_test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in gold))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _run_stage(module, argv: list[str], monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """Run a stage's main() in-process; return the param keys it read."""
    monkeypatch.setattr(sys, "argv", ["stage", *argv])
    before = len(common.LOADED)
    module.main()
    return set().union(*(t.accessed for t in common.LOADED[before:]))


def test_train_then_evaluate(recipe: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    accessed = _run_stage(
        train, ["--params", "params.yaml", "--data", "assets/deduped", "--out", "assets/student"], monkeypatch
    )
    assert accessed == {f"train.{k}" for k in TINY_TRAIN}

    student = recipe / "assets" / "student"
    log = json.loads((student / "train_log.json").read_text())
    assert log["n_train"] == 24 and log["n_val"] == 4 and log["n_params"] > 0
    assert log["loss_history"] and log["val_loss"] is not None and log["tokens_per_second"] > 0
    tokenizer = AutoTokenizer.from_pretrained(student)
    model = AutoModelForCausalLM.from_pretrained(student)
    assert tokenizer.eos_token is not None and tokenizer.pad_token is not None
    assert model.config.n_layer == 1 and model.config.n_embd == 16
    # The format it was trained in (here the default), for the evaluate stage to ask in.
    assert json.loads((student / "prompt_format.json").read_text()) == train.TRAIN_DEFAULTS["prompt_format"]
    assert not list(recipe.joinpath("assets").glob(".student.tmp-*"))  # the atomic temp folder is gone

    out = recipe / "assets" / "eval_report"
    accessed = _run_stage(
        evaluate,
        [
            "--params",
            "params.yaml",
            "--student",
            "assets/student",
            "--data",
            "assets/deduped",
            "--out",
            str(out),
        ],
        monkeypatch,
    )
    assert {k for k in accessed if k.count(".") == 1} == {f"evaluate.{k}" for k in TINY_EVALUATE}
    assert {f"evaluate.diversity.{k}" for k in TINY_EVALUATE["diversity"]} <= accessed

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_test"] == 6
    for system in ("student", "baseline"):
        assert set(metrics[system]) == {"exact_match", "token_f1"}
        assert all(0.0 <= v <= 1.0 for v in metrics[system].values())
    # The breakdown is not a DVC metric: metrics.json keeps the headline, breakdown.json the rest.
    assert "per_category" not in metrics and "details" not in metrics
    breakdown = json.loads((out / "breakdown.json").read_text())
    assert breakdown["task"] == "qa" and breakdown["n_test"] == 6
    assert set(breakdown["per_category"]) <= {"year", "river"}
    assert sum(c["n"] for c in breakdown["per_category"].values()) == 6

    predictions = pl.read_parquet(out / "predictions.parquet")
    assert predictions.columns == [
        "id", "turn", "category", "question", "answer", "prediction", "baseline_prediction", "score",
        "exact_match", "token_f1",
    ]  # fmt: skip
    assert predictions.height == 6
    # The baseline is the most frequent training answer, the same for every question.
    train_answers = pl.read_parquet(recipe / "assets/deduped/train.parquet")["answer"].to_list()
    assert predictions["baseline_prediction"].unique().to_list() == [
        evaluate.most_frequent_answer(train_answers)
    ]

    report = (out / "report.md").read_text()
    for heading in ("## Headline", "## Per category", "## 10 best", "## 10 worst", "## Training loss"):
        assert heading in report
    assert "data:image/svg+xml;base64," in report
    assert "## Diversity of the training data" in report and "tfidf" in report
    html = (out / "report.html").read_text()
    assert html.count("<svg") >= 3 and "<script" not in html and "http" not in html.split("<svg")[0]
    assert metrics["diversity"]["backends"]["mean_pairwise_cosine"] == "tfidf"
    for name in ("headline", "per_category", "confusion", "train_loss"):
        lines = (out / "plots" / f"{name}.csv").read_text().splitlines()
        assert len(lines) >= 2, name
    assert (out / "plots/headline.csv").read_text().splitlines()[0] == "metric,system,value"
    shutil.rmtree(recipe / "assets" / "student")


def test_a_missing_label_column_fails_before_the_model_loads(
    recipe: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    params = yaml.safe_load((recipe / "params.yaml").read_text())
    params["evaluate"]["diversity"]["label_column"] = "label"
    (recipe / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    argv = ["--params", "params.yaml", "--student", "nowhere", "--data", "assets/deduped", "--out", "r"]
    with pytest.raises(SystemExit) as exc:
        _run_stage(evaluate, argv, monkeypatch)
    message = str(exc.value)
    assert "label_column is 'label'" in message and "passage_id" in message and "question" in message
    assert not (recipe / "r").exists()


def test_training_is_deterministic(recipe: Path) -> None:
    rows = pl.read_parquet(recipe / "assets/deduped/train.parquet").to_dicts()
    params = dict(TINY_TRAIN, epochs=1)
    first = train.train_student(rows, [], params, recipe / "a")
    second = train.train_student(rows, [], params, recipe / "b")
    assert first["train_loss"] == second["train_loss"]
    assert (recipe / "a/model.safetensors").read_bytes() == (recipe / "b/model.safetensors").read_bytes()


def test_loss_is_on_the_completion_only() -> None:
    tokenizer = train.train_tokenizer(["Context: a b c\nQuestion: q?\nAnswer: b"] * 4, vocab_size=300)
    row = {"context": "a b c", "question": "q?", "answer": "b"}
    ex = train.encode_example(tokenizer, row, max_length=64)
    supervised = [
        t for t, label in zip(ex["input_ids"], ex["labels"], strict=True) if label != train.IGNORE_INDEX
    ]
    assert tokenizer.decode(supervised) == " b" + tokenizer.eos_token
    assert ex["input_ids"][-1] == tokenizer.eos_token_id

    short = train.encode_example(tokenizer, row, max_length=12)  # the prompt is cut from the left
    assert len(short["input_ids"]) == 12 and short["input_ids"][-1] == tokenizer.eos_token_id


def test_most_frequent_answer() -> None:
    assert evaluate.most_frequent_answer(["b", "a", "a ", "b", "a"]) == "a"
    assert evaluate.most_frequent_answer([]) == ""


def test_answer_swap_replaces_every_whole_word_occurrence() -> None:
    assert train.answer_shape("Fenselbri Tostoseld") == "A A"
    assert train.answer_shape("3,126,371") == "0,0,0"
    assert train.answer_shape("the flute") == "a a"
    row = {
        "context": "Imgabel is the capital. Imgabelo is not. Imgabel.",
        "question": "Capital?",
        "answer": "Imgabel",
    }
    swapped = train.swap_answer(row, "Delbri")
    assert swapped == {
        **row,
        "context": "Delbri is the capital. Imgabelo is not. Delbri.",
        "answer": "Delbri",
    }
    assert train.swap_answer(row, "Imgabel") is None  # same answer: nothing to swap
    assert train.swap_answer({**row, "question": "Is Imgabel the capital?"}, "Delbri") is None


def test_novel_answer_keeps_the_shape_and_is_new() -> None:
    rows = [
        {"context": "Imgabel lies near Tostoseld and Fenselbri.", "answer": "dyed cloth"},
        {"context": "Vengartir is ruled by Dragaran.", "answer": "salt"},
    ]
    names, lower = train._word_pools(rows)
    assert names == ["Dragaran", "Fenselbri", "Imgabel", "Tostoseld", "Vengartir"]
    assert lower == ["cloth", "dyed", "salt"]
    rng = random.Random(0)
    for answer in ["Fenselbri Tostoseld", "3,126,371", "1725", "dyed cloth", "Ortos Range"]:
        made = {train.novel_answer(answer, rng, names, lower) for _ in range(20)}
        assert {train.answer_shape(m) for m in made} == {train.answer_shape(answer)}
        assert len(made) > 1  # varies from draw to draw
    assert train.novel_answer("1725", random.Random(1), names, lower) == train.novel_answer(
        "1725", random.Random(1), names, lower
    )


@pytest.mark.parametrize(
    ("prompt", "completion", "max_length"),
    [
        (None, None, 160),  # the default format
        ("Q: {question}\nC: {context}\nA:", " {answer}.", 160),  # a mark before "." and at the end
        (None, None, 40),  # prompts cut from the left
    ],
)
def test_answer_swap_by_pieces_gives_the_ids_of_encoding_whole(prompt, completion, max_length) -> None:
    """A swapped example built from its `SwapPlan` equals the swapped text encoded whole, on the demo
    world's questions (numbers, names, multi-word answers) over several epochs of draws."""
    fmt = PromptFormat() if prompt is None else PromptFormat("plain", prompt, completion)
    rows = [
        json.loads(line) for line in (REPO_ROOT / "data/demo_world/gold_test.jsonl").read_text().splitlines()
    ]
    rows += [
        {"context": "Le port de l'Avenue est grand. Avenue!", "question": "Q?", "answer": "Avenue"},  # '
        {"context": "Paris Paris is twice.", "question": "Which city?", "answer": "Paris"},  # marks 1 apart
    ]
    tokenizer = train.train_tokenizer([fmt.prompt(r) + fmt.completion(r) for r in rows], vocab_size=400)
    pieces = train.QADataset(tokenizer, rows, max_length, swap_prob=0.9, seed=3, prompt_format=fmt)
    whole = train.QADataset(tokenizer, rows, max_length, swap_prob=0.9, seed=3, prompt_format=fmt)
    whole.plans = [None] * len(rows)  # every swap re-encoded whole
    planned = [i for i, plan in enumerate(pieces.plans) if plan is not None]
    assert len(planned) >= 0.8 * len(rows)
    assert pieces.plans[-2] is None and pieces.plans[-1] is not None  # an apostrophe before the answer
    everything = list(range(len(rows)))
    for epoch in range(4):
        pieces.epoch = whole.epoch = epoch
        assert pieces.__getitems__(everything) == whole.__getitems__(everything), epoch
    assert whole.__getitems__(everything) != [
        {k: ex[k] for k in ("input_ids", "labels", "n_prompt")} for ex in whole.examples
    ]  # swaps happened


def test_answer_swap_by_pieces_with_a_qwen_style_pre_tokenizer() -> None:
    """Llama 3 / Qwen pre-tokenizers glue one punctuation mark to the next word ("-Lyon"): an answer
    right after one gets no plan (a BPE merge could cross the piece edge for a new answer); an answer
    after a space does, and stays exact."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    split = (  # Qwen2's pre-tokenizer regex
        r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"""
        r"""| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
    )
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(split), behavior="isolated"), pre_tokenizers.ByteLevel(use_regex=False)]
    )
    backend.decoder = decoders.ByteLevel()
    corpus = ["a-Tosgar b-Tolken c-Tomar d-Tosken e-Toains"] * 50 + ["Lyon Lyon Lyon Paris line"] * 50
    backend.train_from_iterator(corpus, trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<|endoftext|>", "<|pad|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    ))  # fmt: skip
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="<|endoftext|>", pad_token="<|pad|>"
    )
    rows = [
        {
            "context": "Trains run on the Paris-Lyon line. Tosgar Tolken Tomar.",
            "question": "Q?",
            "answer": "Lyon",
        },
        {
            "context": "Trains run on the Paris line to Lyon. Tosgar Tomar.",
            "question": "Q?",
            "answer": "Lyon",
        },
    ]
    pieces = train.QADataset(tokenizer, rows, 256, swap_prob=1.0, seed=0)
    whole = train.QADataset(tokenizer, rows, 256, swap_prob=1.0, seed=0)
    whole.plans = [None, None]
    assert pieces.plans[0] is None and pieces.plans[1] is not None
    for epoch in range(10):
        pieces.epoch = whole.epoch = epoch
        assert pieces.__getitems__([0, 1]) == whole.__getitems__([0, 1]), epoch
