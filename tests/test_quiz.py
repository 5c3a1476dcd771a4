"""The quiz questions the chapters build: what jupyterquiz receives, and the mistakes a chapter
author can make (a right answer that is not offered, a non-integer asked exactly). That the
quizzes work in the built book is checked in a real browser (test_book)."""

from __future__ import annotations

import json

import pytest

from fmnist_lib import quiz


def test_a_choice_marks_only_the_right_answer_and_keeps_each_feedback():
    question = quiz.choice("Which?", {"a": "Right: a.", "b": "No: b.", "c": "No: c."}, right="a")
    assert question["type"] == "multiple_choice"
    assert [(a["answer"], a["correct"], a["feedback"]) for a in question["answers"]] == [
        ("a", True, "Right: a."),
        ("b", False, "No: b."),
        ("c", False, "No: c."),
    ]
    json.dumps(question)  # what jupyterquiz embeds in the page


def test_a_choice_without_its_right_answer_or_with_one_answer_is_refused():
    with pytest.raises(ValueError, match="'d' is not among"):
        quiz.choice("Which?", {"a": "", "b": ""}, right="d")
    with pytest.raises(ValueError, match="at least two"):
        quiz.choice("Which?", {"a": ""}, right="a")


def test_a_number_is_exact_for_integers_and_a_range_with_a_tolerance():
    exact = quiz.number("How many?", 784.0, "28 x 28.")
    assert exact["answers"][0] == {
        "type": "value",
        "value": 784,
        "correct": True,
        "feedback": "28 x 28.",
    }
    assert exact["answers"][1] == {"type": "default", "feedback": "Not quite. 28 x 28."}
    close = quiz.number("Accuracy?", 0.9132, "From the run.", tolerance=0.005, hint="Look up.")
    assert close["answers"][0]["range"] == pytest.approx([0.9082, 0.9182])
    assert close["answers"][1]["feedback"] == "Look up."
    json.dumps([exact, close])


@pytest.mark.parametrize(
    "value, tolerance, message",
    [(0.9132, 0.0, "give a tolerance"), (float("nan"), 0.1, "finite"), (3, -1, "finite")],
)
def test_a_number_that_cannot_be_typed_is_refused(value, tolerance, message):
    with pytest.raises(ValueError, match=message):
        quiz.number("?", value, "", tolerance=tolerance)


def test_an_empty_quiz_is_refused():
    with pytest.raises(ValueError, match="at least one question"):
        quiz.show()
