"""Answer-swap augmentation for extractive QA: the answer replaced, in the context and as the target, by a
new answer of the same shape.

With probability `prob` an example is shown with a new answer (`novel_answer`) that changes from epoch to
epoch and is mostly a string never seen before, so it cannot be memorised: the only way to be right is to
read it off the context (to copy). Without it a tiny model trained on a few hundred passages memorises the
training answers and never learns to copy, so it fails on the held-out entities of the test set. Draws
are seeded by (seed, index, epoch), so a run is deterministic and a resumed run sees exactly the examples
the uninterrupted run would have seen.

It reads two columns (`SwapColumns`): the answer (a column of the completion) and the context (a column
of the prompt) it is copied from; a row whose answer also occurs in another column of the prompt (e.g.
the question) is never swapped. `SwapPlan` makes a swap cheap: the example is kept as token pieces around
the answer's places, and a swap encodes only the new answer.
"""

import functools
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dagster_project.student.data import token_ids
from dagster_project.student.prompt_format import PromptFormat

if TYPE_CHECKING:  # transformers is heavy to import; only its types are named here
    from transformers import PreTrainedTokenizerBase

# Compiled once: answer swap runs these on most examples of every batch, and `re`'s own cache (512
# patterns) is flushed by the per-answer patterns below, which made each call recompile.
_DIGITS = re.compile(r"\d+")
_CAPITALISED = re.compile(r"\b[A-Z][a-z]+\b")
_LOWER_WORD = re.compile(r"\b[a-z]+\b")


@dataclass(frozen=True)
class SwapColumns:
    """The columns answer swap reads: `answer` (swapped as the target), `context` (where the answer is
    swapped too) and `guard` (other columns the prompt shows: an answer found in one is not swapped)."""

    answer: str = "answer"
    context: str = "context"
    guard: tuple[str, ...] = ("question",)

    @classmethod
    def of(cls, prompt_format: PromptFormat, answer: str, context: str) -> "SwapColumns":
        """The columns for a format: every other column it reads is a guard."""
        return cls(answer, context, tuple(c for c in prompt_format.columns if c not in (answer, context)))


DEFAULT_COLUMNS = SwapColumns()


def answer_shape(answer: str) -> str:
    """A coarse type of an answer: digit runs -> 0, capitalised words -> A, lowercase runs -> a.

    "Fenselbri Tostoseld" -> "A A", "3,126,371" -> "0,0,0", "1725" -> "0", "the flute" -> "a a".
    """
    shape = re.sub(r"\d+", "0", answer)
    shape = re.sub(r"[A-Z]\w*", "A", shape)
    return re.sub(r"[a-z]\w*", "a", shape)


def swap_answer(
    row: Mapping[str, Any], new_answer: str, columns: SwapColumns = DEFAULT_COLUMNS
) -> dict[str, Any] | None:
    """The example with every whole-word occurrence of its answer in the context replaced by
    `new_answer`, and `new_answer` as the answer; None if the swap is impossible or ambiguous."""
    answer, context = row[columns.answer], row[columns.context]
    pattern = _whole_word(answer)
    guarded = any(answer in str(row[c]) for c in columns.guard)
    if new_answer == answer or guarded or not pattern.search(context):
        return None
    swapped = pattern.sub(lambda _: new_answer, context)
    return {**row, columns.context: swapped, columns.answer: new_answer}


@functools.lru_cache(maxsize=65536)
def _whole_word(text: str) -> re.Pattern:
    """A pattern matching `text` as a whole word (not inside a longer word)."""
    return re.compile(rf"(?<!\w){re.escape(text)}(?!\w)")


def word_pools(
    rows: Sequence[Mapping[str, Any]], columns: SwapColumns = DEFAULT_COLUMNS
) -> tuple[list[str], list[str]]:
    """Capitalised words of the contexts (name material) and lowercase words of the answers."""
    names = sorted({w for r in rows for w in re.findall(r"\b[A-Z][a-z]{3,}\b", r[columns.context])})
    lower = sorted({w for r in rows for w in re.findall(r"\b[a-z]+\b", r[columns.answer])})
    return names, lower


def novel_answer(answer: str, rng: random.Random, names: Sequence[str], lower: Sequence[str]) -> str:
    """An answer of the same shape as `answer` that is (almost surely) new: a digit run becomes random
    digits of the same length; a capitalised word becomes the front of one name spliced to the back of
    another; a lowercase word becomes another answer word.

    "Imgabel" -> e.g. "Tosgar", "3,126,371" -> e.g. "8,403,915", "dyed cloth" -> e.g. "salt wine".
    """

    def digits(m: re.Match) -> str:
        n = len(m.group())
        return str(rng.randint(1, 9)) + "".join(str(rng.randint(0, 9)) for _ in range(n - 1))

    def name(m: re.Match) -> str:
        if len(names) < 2:
            return m.group()
        a, b = rng.sample(names, 2)
        return a[: rng.randint(2, max(2, len(a) - 2))] + b[rng.randint(2, len(b) - 2) :]

    def word(m: re.Match) -> str:
        return rng.choice(lower) if lower else m.group()

    out = _DIGITS.sub(digits, answer)
    out = _CAPITALISED.sub(name, out)
    return _LOWER_WORD.sub(word, out)


SWAP_MARK = "\ue000"  # a private-use character: where an answer goes in a swap plan's texts
_Pieces = tuple[list[list[int]], list[str]]  # token ids between the answer's places, and each place's lead


class SwapPlan:
    """An example's prompt and completion as token ids around its answer's places, so an answer swap
    encodes only the new answer, not the whole example again (on CPU that re-encoding was ~8% of a
    training step: a tokenizer call right after the model's kernels ran cost ~4x one made alone).

    A text is `ids[0] + enc(leads[0] + answer) + ids[1] + ...`. A space before an answer moves into its
    lead, because byte-level BPE glues a space to the word after it. `plan_swaps` makes a plan only
    where joining gives exactly the ids of encoding the text whole, checked on the example's own answer
    and on a stand-in new one; a new answer has the same shape (`novel_answer`), so the same pre-token
    boundaries. `leads` holds the distinct leads, the answer encodings a swap needs.
    """

    __slots__ = ("prompt", "completion", "leads")

    def __init__(self, prompt: _Pieces, completion: _Pieces) -> None:
        self.prompt, self.completion = prompt, completion
        self.leads = tuple(sorted(set(prompt[1]) | set(completion[1])))

    @staticmethod
    def join(text: _Pieces, answer_ids: Mapping[str, list[int]]) -> list[int]:
        """The ids of `text` with the answer whose ids after each lead are `answer_ids[lead]`."""
        pieces, leads = text
        ids = list(pieces[0])
        for lead, piece in zip(leads, pieces[1:], strict=True):
            ids += answer_ids[lead]
            ids += piece
        return ids


def _split_at_marks(text: str) -> tuple[list[str], list[str]] | None:
    """(pieces, leads) of a text around its SWAP_MARKs, or None where a pre-token could span an answer's
    edge: the answer must follow a space (its lead), a line break or the start of the text (pre-tokenizers
    like Llama 3's and Qwen's glue one punctuation mark to the word after it), and must not be followed
    by a letter, digit or apostrophe (e.g. the contraction "'s")."""
    parts = text.split(SWAP_MARK)
    leads = []
    for k in range(len(parts) - 1):
        lead = " " if parts[k].endswith(" ") else ""
        parts[k] = parts[k][: len(parts[k]) - len(lead)]
        if not lead and parts[k][-1:] not in ("", "\n", "\r"):
            return None
        after = parts[k + 1][:1]
        if after.isalnum() or after in ("'", "’"):
            return None
        leads.append(lead)
    return parts, leads


def _shifted(answer: str) -> str:
    """A stand-in new answer of the same shape: each ASCII letter one on in its case (z -> a), each digit
    one on (9 -> 1, never 0)."""

    def shift(c: str) -> str:
        if c.isascii() and c.isalpha():
            base = ord("a") if c.islower() else ord("A")
            return chr(base + (ord(c) - base + 1) % 26)
        return str(int(c) % 9 + 1) if c.isascii() and c.isdigit() else c

    return "".join(shift(c) for c in answer)


def plan_swaps(
    tokenizer: "PreTrainedTokenizerBase",
    rows: Sequence[Mapping[str, Any]],
    prompt_format: PromptFormat,
    columns: SwapColumns = DEFAULT_COLUMNS,
) -> list[SwapPlan | None]:
    """A `SwapPlan` for each row whose answer swap can be encoded by pieces exactly; None for the others
    (re-encoded whole when swapped). A plan must give the ids of encoding the text whole both for the
    row's own answer and for a stand-in new one (`_shifted`: BPE merges across a piece edge would show).
    One tokenizer call for all rows."""
    # row index -> (prompt (pieces, leads), completion (pieces, leads), the row with the stand-in answer)
    candidates: dict[int, tuple[tuple[list[str], list[str]], tuple[list[str], list[str]], dict]] = {}
    for i, row in enumerate(rows):
        answer, context = row[columns.answer], row[columns.context]
        if not (answer[:1].isalnum() and answer[-1:].isalnum()):
            continue
        # None: the answer is in a guard column or not in the context (swap_answer's own rules)
        stand_in = swap_answer(row, _shifted(answer), columns)
        if stand_in is None or any(SWAP_MARK in str(v) for v in row.values()):
            continue
        marked_context = _whole_word(answer).sub(SWAP_MARK, context)
        marked = {**row, columns.context: marked_context, columns.answer: SWAP_MARK}
        prompt = _split_at_marks(prompt_format.prompt(marked, tokenizer))
        completion = _split_at_marks(prompt_format.completion(marked))
        if prompt is not None and completion is not None:
            candidates[i] = (prompt, completion, stand_in)
    texts: list[str] = []
    for i, ((prompt_pieces, _), (completion_pieces, _), stand_in) in candidates.items():
        texts += [*prompt_pieces, *completion_pieces]
        for version in (rows[i], stand_in):
            answer = version[columns.answer]
            texts += [answer, " " + answer, prompt_format.prompt(version, tokenizer)]
            texts.append(prompt_format.completion(version))
    ids = iter(token_ids(tokenizer, texts))
    plans: list[SwapPlan | None] = [None] * len(rows)
    for i, ((prompt_pieces, prompt_leads), (completion_pieces, completion_leads), _) in candidates.items():
        plan = SwapPlan(
            ([next(ids) for _ in prompt_pieces], prompt_leads),
            ([next(ids) for _ in completion_pieces], completion_leads),
        )
        exact = True
        for _ in range(2):  # the row's own answer, then the stand-in
            answer_ids = {"": next(ids), " ": next(ids)}
            whole_prompt, whole_completion = next(ids), next(ids)
            exact &= plan.join(plan.prompt, answer_ids) == whole_prompt
            exact &= plan.join(plan.completion, answer_ids) == whole_completion
        if exact:
            plans[i] = plan
    return plans


class AnswerSwap:
    """Answer swap over a dataset's rows: which answer example `i` is shown with in an epoch, and the
    plans that encode a swap by pieces (`SwapPlan`; None: that example is re-encoded whole)."""

    def __init__(
        self,
        tokenizer: "PreTrainedTokenizerBase",
        rows: Sequence[Mapping[str, Any]],
        prompt_format: PromptFormat,
        prob: float,
        seed: int,
        columns: SwapColumns = DEFAULT_COLUMNS,
    ) -> None:
        self.rows, self.prob, self.seed, self.columns = rows, prob, seed, columns
        self.names, self.lower = word_pools(rows, columns)
        self.plans = plan_swaps(tokenizer, rows, prompt_format, columns)

    def new_answer(self, i: int, epoch: int) -> str | None:
        """The answer example `i` is shown with in `epoch`, or None (not drawn for a swap, or the same)."""
        rng = random.Random(f"{self.seed}:{i}:{epoch}")
        if rng.random() >= self.prob:
            return None
        answer = self.rows[i][self.columns.answer]
        new = novel_answer(answer, rng, self.names, self.lower)
        return None if new == answer else new

    def swapped_row(self, i: int, new_answer: str) -> dict[str, Any] | None:
        """Row `i` with `new_answer` (None where the swap is impossible)."""
        return swap_answer(self.rows[i], new_answer, self.columns)
