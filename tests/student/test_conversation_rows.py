"""Multi-turn training rows: one example per assistant turn with the passage and history in its prompt;
a long history loses its oldest turns first and the passage is never cut."""

from dagster_project.student.conversation import expand_conversations, fit_history, strip_private
from dagster_project.student.prompt_format import PromptFormat

FORMAT = PromptFormat("plain", "{context}\nQ: {question}\nA:", " {answer}")


class WordTokenizer:
    """One token per whitespace-separated word (enough to count lengths)."""

    eos_token_id = 0

    def __call__(self, texts, add_special_tokens=False):
        return {"input_ids": [[1] * len(t.split()) for t in texts]}


PASSAGE = "Delya is a kingdom . Its capital is Ositheld ."  # 10 words
CONV = {
    "context": PASSAGE,
    "turns": [
        {"question": "q one ?", "answer": "Delya", "turn_type": "factoid"},
        {"question": "q two ?", "answer": "Ositheld", "turn_type": "followup"},
        {"question": "q three ?", "answer": "unknown", "turn_type": "unanswerable"},
    ],
}


def test_one_example_per_assistant_turn_with_the_history_before_it():
    rows = expand_conversations([CONV])
    assert [r["answer"] for r in rows] == ["Delya", "Ositheld", "unknown"]
    assert [r["turn"] for r in rows] == [0, 1, 2]
    assert rows[2]["context"] == f"{PASSAGE}\nQ: q one ? A: Delya\nQ: q two ? A: Ositheld"
    assert [r["turn_type"] for r in strip_private(rows)] == ["factoid", "followup", "unanswerable"]
    assert "_history" not in strip_private(rows)[0]


def test_a_long_history_loses_its_oldest_turns_first_and_never_the_passage():
    rows = expand_conversations([CONV])
    # turn 3's prompt: 10 passage words + 2 history lines of 6 words + "Q: q three ? A:" (5) = 27 words;
    # its completion: 1 word + eos. With max_length 24 the oldest history turn must go.
    kept, stats = fit_history(rows, WordTokenizer(), FORMAT, max_length=24)
    assert [r["context"] for r in kept][2] == f"{PASSAGE}\nQ: q two ? A: Ositheld"
    assert stats == {"turns_truncated": 1, "history_turns_dropped": 1, "turns_left_out": 0}
    # a budget below passage + question: the turn is left out rather than trained on a cut passage
    kept, stats = fit_history(rows, WordTokenizer(), FORMAT, max_length=12)
    assert kept == [] and stats["turns_left_out"] == 3
    assert all(PASSAGE in r["context"] for r in fit_history(rows, WordTokenizer(), FORMAT, 18)[0])
