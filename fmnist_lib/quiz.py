"""Self-check quizzes for the end of a chapter. jupyterquiz renders them as HTML and JavaScript
that check each answer in the page itself: in Jupyter, and in the built book with no kernel.

    quiz.show(
        quiz.choice("Which layer has the most weights?",
                    {"The first": "Right: 784 inputs times 512 units.",
                     "The last": "No: it has only 10 units."},
                    right="The first"),
        quiz.number("How many weights does the network have?", model.count_params(),
                    "Each unit has one weight per input, plus a bias."),
    )

Numbers a chapter computed go in as values, so the quiz follows the run.
"""

from __future__ import annotations

import math


def choice(question: str, answers: dict[str, str], right: str) -> dict:
    """A multiple-choice question: `answers` maps each answer to the feedback it shows."""
    if right not in answers:
        raise ValueError(f"the right answer {right!r} is not among the answers {list(answers)}")
    if len(answers) < 2:
        raise ValueError("a multiple-choice question needs at least two answers")
    return {
        "question": question,
        "type": "multiple_choice",
        "answers": [
            {"answer": answer, "correct": answer == right, "feedback": feedback}
            for answer, feedback in answers.items()
        ],
    }


def number(
    question: str, value: float, why: str, tolerance: float = 0.0, hint: str | None = None
) -> dict:
    """A numeric question: right within `tolerance` of `value` (exactly, when it is 0); `why`
    explains the right answer, `hint` is shown for any other."""
    value = float(value)
    if not math.isfinite(value) or tolerance < 0:
        raise ValueError(f"a numeric answer needs a finite value and tolerance, not {value}")
    if tolerance:
        right = {"type": "range", "range": [value - tolerance, value + tolerance]}
    elif value.is_integer():
        right = {"type": "value", "value": int(value)}
    else:  # nobody types 0.91234567 exactly
        raise ValueError(f"give a tolerance for a non-integer answer ({value})")
    return {
        "question": question,
        "type": "numeric",
        "answers": [
            {**right, "correct": True, "feedback": why},
            {"type": "default", "feedback": hint or f"Not quite. {why}"},
        ],
    }


def show(*questions: dict) -> None:
    """Display the questions as one quiz, answers in the order given."""
    from jupyterquiz import display_quiz

    if not questions:
        raise ValueError("a quiz needs at least one question")
    display_quiz(list(questions), shuffle_answers=False)
