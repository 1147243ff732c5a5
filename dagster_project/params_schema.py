"""The schema of params.yaml: every knob, its type and allowed values, checked before any work.

`validate_params` turns pydantic's errors into messages that name the key, what is allowed and the
fix, e.g. ``params.yaml: dedup.near_treshold: unknown key; did you mean 'near_threshold'?``.
"""

import difflib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from dagster_project.stages.prompt_format import (
    COMPLETION_FIELDS,
    DEFAULT_COMPLETION,
    DEFAULT_PROMPT,
    PROMPT_FIELDS,
    PromptFormatError,
    parse_template,
)


class ParamsError(ValueError):
    """params.yaml (or a file it names) is wrong; the message says where and how to fix it."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class Source(_Section):
    """One place grounding passages come from."""

    path: str
    format: Literal["jsonl", "parquet", "text_dir", "hf_dataset"] = "jsonl"
    text_field: str = "text"
    split: str = "train"  # only for hf_dataset


class RetrieveParams(_Section):
    sources: list[Source] = Field(min_length=1)
    chunk_words: int = Field(gt=0)
    chunk_overlap_words: int = Field(ge=0)
    queries: str
    top_k: int = Field(gt=0)


class SynthesizeParams(_Section):
    prompt: str
    teacher_model: str
    questions_per_passage: int = Field(gt=0)
    temperature: float = Field(ge=0, le=2)
    seed: int
    max_attempts: int = Field(ge=1)


Normalization = Literal["nfkc", "lowercase", "punctuation", "whitespace"]
ExampleField = Literal["question", "answer", "context"]
Scorer = Literal["ratio", "token_sort_ratio", "token_set_ratio"]


class LSHParams(_Section):
    """MinHash-LSH candidate search: bands x rows hash functions; P(candidate) = 1 - (1 - J^rows)^bands."""

    bands: int = Field(gt=0, le=512)
    rows: int = Field(gt=0, le=64)
    shingle_words: int = Field(ge=1, le=8)  # word n-gram size of the shingles (1: bag of words)
    block_by: str | None  # a column: only rows sharing its value are compared (null: all rows)


class DecontaminateParams(_Section):
    ngram: int = Field(ge=1)  # word n-gram shared with an evaluation text = contaminated
    ngram_fields: list[ExampleField] = Field(min_length=1)
    near_fields: list[ExampleField] = Field(min_length=1)
    near_threshold: float = Field(ge=0, le=100)
    near_scorer: Scorer


class FilterParams(_Section):
    required: list[ExampleField]  # must be non-blank
    min_chars: dict[ExampleField, int]
    max_chars: dict[ExampleField, int]
    min_latin_ratio: float = Field(ge=0, le=1)  # share of Latin-script letters in the key fields; 0: off
    refusal_patterns: list[str]  # regexes (case-insensitive) over the key fields

    @field_validator("refusal_patterns")
    @classmethod
    def _patterns_compile(cls, patterns: list[str]) -> list[str]:
        import polars as pl

        for pattern in patterns:
            try:
                pl.Series([""]).str.contains(pattern)
            except Exception as exc:  # polars raises its own ComputeError
                raise ValueError(f"refusal pattern {pattern!r} is not a valid regex: {exc}") from None
        return patterns


class JudgeParams(_Section):
    enabled: bool
    prompt: str
    teacher_model: str
    min_score: float  # rows the judge scores below this are removed
    temperature: float = Field(ge=0, le=2)
    max_attempts: int = Field(ge=1)


class DedupParams(_Section):
    key_fields: list[ExampleField] = Field(min_length=1)
    normalize: list[Normalization]
    keep: Literal["first", "longest", "highest"]  # which row of a duplicate cluster stays
    keep_column: str | None  # the column `keep: highest` ranks by
    near_threshold: float = Field(ge=0, le=100)
    near_scorer: Scorer
    lsh: LSHParams
    decontaminate: DecontaminateParams
    filters: FilterParams
    judge: JudgeParams
    val_fraction: float = Field(gt=0, lt=1)
    seed: int

    @model_validator(mode="after")
    def _keep_column_when_highest(self) -> "DedupParams":
        if self.keep == "highest" and not self.keep_column:
            raise ValueError("keep: highest needs keep_column (the column to rank by)")
        return self


class LoraParams(_Section):
    enabled: bool = False
    r: int = Field(default=8, gt=0)
    alpha: float = Field(default=16, gt=0)
    dropout: float = Field(default=0.0, ge=0, lt=1)
    target_modules: list[str] | None = None  # null: peft's default for the architecture


class PromptFormatParams(_Section):
    """`train.prompt_format`: how an example becomes prompt and completion (stages/prompt_format.py)."""

    style: Literal["plain", "chat"] = "plain"
    prompt: str = DEFAULT_PROMPT
    completion: str = DEFAULT_COMPLETION
    system: str | None = None

    @field_validator("prompt", "completion")
    @classmethod
    def _known_placeholders(cls, template: str, info: ValidationInfo) -> str:
        allowed = PROMPT_FIELDS if info.field_name == "prompt" else COMPLETION_FIELDS
        try:
            parse_template(template, allowed, info.field_name)
        except PromptFormatError as exc:
            raise ValueError(exc.reason) from None
        return template

    @model_validator(mode="after")
    def _system_needs_chat(self) -> "PromptFormatParams":
        if self.system is not None and self.style != "chat":
            raise ValueError("system (a system message) needs style: chat")
        return self


class TrainParams(_Section):
    base_model: str | None
    vocab_size: int = Field(ge=300)
    n_layer: int = Field(gt=0)
    n_head: int = Field(gt=0)
    n_embd: int = Field(gt=0)
    max_length: int = Field(gt=8)
    epochs: float = Field(gt=0)
    batch_size: int = Field(gt=0)
    learning_rate: float = Field(gt=0)
    warmup_ratio: float = Field(ge=0, lt=1)
    prompt_loss_weight: float = Field(ge=0)
    answer_swap_prob: float = Field(ge=0, le=1)
    seed: int
    # Optional keys (defaults = the behaviour before they existed; see train.TRAIN_DEFAULTS).
    gradient_accumulation_steps: int = Field(default=1, gt=0)
    lr_scheduler: Literal["cosine", "linear", "constant_with_warmup"] = "cosine"
    packing: bool = False
    eval_steps: int = Field(default=0, ge=0)
    early_stopping_patience: int = Field(default=0, ge=0)
    save_steps: int = Field(default=200, ge=0)
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    torch_compile: bool = False
    lora: LoraParams = LoraParams()
    prompt_format: PromptFormatParams = PromptFormatParams()

    @model_validator(mode="after")
    def _early_stopping_needs_evaluation(self) -> "TrainParams":
        if self.early_stopping_patience and not self.eval_steps:
            raise ValueError("early_stopping_patience needs eval_steps > 0 (how often to evaluate)")
        return self

    @model_validator(mode="after")
    def _chat_needs_a_pretrained_model(self) -> "TrainParams":
        if self.prompt_format.style == "chat" and not self.base_model:
            raise ValueError(
                "prompt_format.style: chat needs a pretrained chat model as base_model (its tokenizer's "
                "chat template); the offline default tokenizer (base_model: null) has none: use style: plain"
            )
        return self


class DiversityParams(_Section):
    max_texts: int = Field(gt=1)  # seeded sample of training texts for self-BLEU and cosine
    embedding: Literal["auto", "tfidf", "sentence-transformers"]
    embedding_model: str | None  # a sentence-transformers name/path; null: the bundled MiniLM if installed
    reference_texts: str | None  # human texts (JSONL field `text`, or one a line) for MAUVE; null: no MAUVE
    label_column: str | None  # train.parquet column grouping texts for label-wise cosine; null: not computed


class EvaluateParams(_Section):
    gold_test: str
    task: Literal["qa", "multi_turn_qa", "classification", "free_text"]
    labels: list[str]  # classification: the label words the student generates
    max_new_tokens: int = Field(gt=0)
    batch_size: int = Field(gt=0)
    teacher_reference: bool  # the teacher answers the test set too (through the engine, cached)
    teacher_model: str  # the teacher for reference answers and the free_text judge
    reference_prompt: str
    judge_prompt: str
    bootstrap_resamples: int = Field(ge=100)
    seed: int
    diversity: DiversityParams


class Params(_Section):
    retrieve: RetrieveParams
    synthesize: SynthesizeParams
    dedup: DedupParams
    train: TrainParams
    evaluate: EvaluateParams


# Files that params name and that must exist before any stage runs: (section, key).
_REQUIRED_FILES = [("synthesize", "prompt"), ("retrieve", "queries"), ("evaluate", "gold_test")]


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model that owns the field at `loc` (the location of an error), if any."""
    model: Any = Params
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part) if isinstance(model, type) else None
        if field is None:
            return None
        ann = field.annotation
        args = getattr(ann, "__args__", ())
        inner = next((a for a in (ann, *args) if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if inner is None:
            return None
        model = inner
    return model


def _describe(err: dict[str, Any], source: str) -> str:
    loc = tuple(err["loc"])
    key = ".".join(str(p) for p in loc)
    kind = err["type"]
    if kind == "extra_forbidden":
        model = _model_at(loc)
        allowed = sorted(model.model_fields) if model else []
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        hint = f" did you mean '{close[0]}'?" if close else ""
        return f"{source}: {key}: unknown key.{hint} Allowed keys here: {', '.join(allowed)}."
    if kind == "missing":
        return f"{source}: {key}: required key is missing; add it (see README.md, 'params.yaml')."
    if kind == "literal_error":
        expected = err.get("ctx", {}).get("expected", "")
        return f"{source}: {key}: {err['input']!r} is not allowed; allowed values: {expected}."
    if kind == "value_error":  # a validator's own message; a whole section as the input is noise
        reason = str(err.get("ctx", {}).get("error") or err["msg"])
        shown = "" if isinstance(err.get("input"), dict | list) else f" (got {err.get('input')!r})"
        return f"{source}: {key}: {reason}{shown}."
    got = type(err["input"]).__name__ if "input" in err else "?"
    return f"{source}: {key}: {err['msg']} (got {err.get('input')!r} of type {got})."


def validate_params(raw: Any, root: Path | str = ".", source: str = "params.yaml") -> Params:
    """Validate a parsed params.yaml; raise ParamsError naming every wrong key and the fix."""
    if not isinstance(raw, dict):
        raise ParamsError(
            f"{source}: expected a mapping of sections at the top level, got {type(raw).__name__}."
        )
    try:
        params = Params.model_validate(raw)
    except ValidationError as exc:
        lines = [_describe(e, source) for e in exc.errors()]
        raise ParamsError("\n".join(lines)) from None
    root = Path(root)
    for section, key in _REQUIRED_FILES:
        value = getattr(getattr(params, section), key)
        if not (root / value).exists():
            raise ParamsError(
                f"{source}: {section}.{key}: file '{value}' does not exist; create it or point "
                f"{section}.{key} at an existing file."
            )
    judge = params.dedup.judge
    if judge.enabled and not (root / judge.prompt).exists():
        raise ParamsError(
            f"{source}: dedup.judge.prompt: file '{judge.prompt}' does not exist; create it or switch the "
            "judge off (dedup.judge.enabled: false)."
        )
    for i, src in enumerate(params.retrieve.sources):
        if src.format != "hf_dataset" and not (root / src.path).exists():
            raise ParamsError(
                f"{source}: retrieve.sources.{i}.path: '{src.path}' does not exist; fix the path "
                "or use format: hf_dataset for a Hugging Face dataset name."
            )
    return params


def load_params(path: Path | str = "params.yaml") -> tuple[Params, dict[str, Any]]:
    """Read and validate params.yaml; return the typed params and the raw mapping."""
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"{path}: params file not found.")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {exc}") from None
    return validate_params(raw, root=path.parent, source=str(path.name)), raw


def main() -> None:
    """`python -m dagster_project.params_schema [params.yaml]`: check params, exit 1 with the reason."""
    import sys

    try:
        load_params(sys.argv[1] if len(sys.argv) > 1 else "params.yaml")
    except ParamsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    print("params.yaml: ok")


if __name__ == "__main__":
    main()
