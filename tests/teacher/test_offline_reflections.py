"""The offline stand-ins for the reflection and judge prompts: their rules on hand-picked inputs."""

import pytest

from dagster_project.teacher.offline.reflections import judge, reflect, second_person


def test_second_person_swaps_the_client_only():
    assert second_person("I was sure my son was fine") == "you were sure your son was fine"
    assert (
        second_person("I've tried, but I'm tired of myself.") == "you've tried, but you're tired of yourself."
    )


@pytest.mark.parametrize(
    ("utterance", "reflection", "kind"),
    [
        (
            "I dread going into the office every Monday, but we need the money.",
            "Part of you knows you dread going into the office every Monday, and part of you feels we need "
            "the money.",
            "complex",
        ),
        (
            "Honestly, I'm anxious because my boss keeps piling extra shifts on me.",
            "You're feeling anxious because your boss keeps piling extra shifts on you.",
            "complex",
        ),
        (
            "I lie awake worrying about tomorrow and I feel stuck.",
            "It sounds like you lie awake worrying about tomorrow, and you feel stuck.",
            "simple",
        ),
        (
            "I get headaches almost every day now.",
            "It sounds like you get headaches almost every day now.",
            "simple",
        ),
    ],
)
def test_reflect_rules_and_the_judge_accepts_them(utterance, reflection, kind):
    assert reflect(utterance) == (reflection, kind)
    acceptable, judged_kind, reason = judge(utterance, reflection)
    assert acceptable, reason
    assert judged_kind == kind


UTTERANCE = "My sister and I haven't spoken since the divorce and I feel lonely."


@pytest.mark.parametrize(
    ("reflection", "reason"),
    [
        ("Have you tried calling your sister?", "a question"),
        ("You should call your sister and talk it over.", "gives advice"),
        ("My sister and I haven't spoken since the divorce.", "first-person"),
        ("Okay, I see.", "first-person"),
        ("Lonely.", "1 words"),
        ("You're feeling lonely because your sister your sister your sister your sister.", "repeats itself"),
        ("It sounds like you really enjoy your garden these days.", "shares 0 content words"),
        (
            "You're feeling lonely because your sister moved abroad and changed jobs twice recently.",
            "not faithful",
        ),
    ],
)
def test_the_judge_rejects_with_the_rule_that_decided(reflection, reason):
    acceptable, _, why = judge(UTTERANCE, reflection)
    assert not acceptable
    assert reason in why
