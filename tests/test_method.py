"""Intervals, paired tests, learning-curve diagnosis, and the library's shape (no import cycle)."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fmnist_lib.evaluation import accuracy_interval, diagnose_fit, paired_comparison

LIBRARY = Path(__file__).resolve().parent.parent / "fmnist_lib"


def test_wilson_interval_matches_known_values():
    # Reference values of the Wilson score interval (z = 1.96).
    low, high = accuracy_interval(9200, 10000)
    assert low == pytest.approx(0.91452, abs=1e-5) and high == pytest.approx(0.92516, abs=1e-5)
    assert accuracy_interval(0, 10)[0] == 0 and accuracy_interval(0, 10)[1] == pytest.approx(
        0.27753, abs=1e-5
    )
    assert accuracy_interval(10, 10)[1] == pytest.approx(1.0)
    with pytest.raises(ValueError):
        accuracy_interval(0, 0)


def _wilson_by_hand(correct, total, confidence):
    """Wilson's score interval as the library computed it before it called SciPy (Newcombe
    1998, method 3: no continuity correction)."""
    from scipy.stats import norm

    z = norm.ppf(0.5 + confidence / 2)
    share = correct / total
    centre = (share + z * z / (2 * total)) / (1 + z * z / total)
    half = z * np.sqrt(share * (1 - share) / total + z * z / (4 * total * total))
    half /= 1 + z * z / total
    return max(0.0, centre - half), min(1.0, centre + half)


def test_accuracy_interval_is_the_wilson_interval_without_continuity_correction():
    from scipy.stats import binomtest

    pairs = [(k, n) for n in range(1, 41) for k in range(n + 1)]
    pairs += [(k, n) for n in (100, 1000, 10000, 60000) for k in (0, 1, n // 2, 92 * n // 100, n)]
    for confidence in (0.5, 0.9, 0.95, 0.99):
        for k, n in pairs:
            expected = _wilson_by_hand(k, n, confidence)
            np.testing.assert_allclose(
                accuracy_interval(k, n, confidence), expected, rtol=0, atol=1e-15
            )
    # Not the continuity-corrected variant, which is wider by about 1/(2n) on each side.
    corrected = binomtest(9, 10).proportion_ci(method="wilsoncc")
    assert corrected.low < accuracy_interval(9, 10)[0] - 0.01


def test_interval_shrinks_with_more_images():
    narrow = np.subtract(*accuracy_interval(9200, 10000)[::-1])
    wide = np.subtract(*accuracy_interval(920, 1000)[::-1])
    assert wide > 3 * narrow


def test_paired_comparison_counts_discordant_images_and_words_the_result():
    truth = np.zeros(1000, dtype=int)
    a = truth.copy()
    b = truth.copy()
    a[:10] = 1  # A wrong on 10 images
    b[10:70] = 1  # B wrong on 60 others
    result = paired_comparison(truth, a, b, "A", "B")
    assert (result.only_a, result.only_b) == (60, 10)
    assert result.p_value < 1e-6 and result.significant
    assert result.verdict.startswith("A is better than B by 5.00 points")

    close = b.copy()
    close[70:75] = 1  # B wrong on 65: 60 vs 65 discordant pairs, no evidence either way
    noisy = paired_comparison(truth, b, close, "B", "C")
    assert not noisy.significant and "within noise" in noisy.verdict

    same = paired_comparison(truth, a, a)
    assert same.p_value == 1.0 and "within noise" in same.verdict
    one_wrong = truth.copy()
    one_wrong[0] = 1
    single = paired_comparison(truth, truth, one_wrong, "A", "B")
    assert "(1 image right only for A, 0 only for B;" in single.verdict


def _history(val_loss, accuracy, val_accuracy):
    n = len(val_loss)
    return pd.DataFrame(
        {
            "loss": np.linspace(1, 0.1, n),
            "accuracy": [accuracy] * n,
            "val_loss": val_loss,
            "val_accuracy": [val_accuracy] * n,
        }
    )


def test_diagnosis_reads_overfitting_from_the_validation_loss():
    rising = _history([0.5, 0.4, 0.35, 0.36, 0.40, 0.45], 0.99, 0.90)
    d = diagnose_fit(rising)
    assert d.overfits and d.best_epoch == 3 and d.gap == pytest.approx(9.0)
    assert "overfits after epoch 3" in d.sentence and "memorises" in d.sentence


def test_training_accuracy_below_validation_is_not_called_underfitting():
    # Dropout's signature: Keras's training accuracy below validation, loss still falling.
    d = diagnose_fit(_history([0.6, 0.5, 0.45, 0.42], 0.88, 0.90))
    assert not d.overfits and d.best_epoch == 4 and d.gap == pytest.approx(-2.0)
    assert "not underfitting" in d.sentence and "underfits" not in d.sentence.replace(
        "not underfitting", ""
    )


def _imports(path: Path) -> set[str]:
    """The fmnist_lib modules a module imports, at the top or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1:  # from . import x / from .x import y
                if node.module:
                    found.add(node.module.split(".")[0])
                else:
                    found.update(alias.name for alias in node.names)
            elif node.module and node.module.startswith("fmnist_lib"):
                parts = node.module.split(".")
                if len(parts) > 1:
                    found.add(parts[1])
                else:
                    found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("fmnist_lib."):
                    found.add(alias.name.split(".")[1])
    return found


def test_the_library_has_no_import_cycle():
    modules = {path.stem: path for path in LIBRARY.glob("*.py") if path.stem != "__init__"}
    graph = {name: _imports(path) & set(modules) - {name} for name, path in modules.items()}
    assert graph["training"] >= {"serving", "tracking"}  # the walk sees real imports

    visiting, done = [], set()

    def visit(name):
        if name in done:
            return
        assert name not in visiting, " -> ".join([*visiting[visiting.index(name) :], name])
        visiting.append(name)
        for other in sorted(graph[name]):
            visit(other)
        visiting.pop()
        done.add(name)

    for name in sorted(graph):
        visit(name)


# --- calibration and the "not sure" threshold ----------------------------------------------------


def _overconfident(n=4000, true_temperature=2.5, seed=0):
    """Labels drawn from known probabilities, and those probabilities sharpened as an
    over-confident network would give them (temperature 1 / true_temperature)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 1.5, (n, 10))
    logits[np.arange(n), rng.integers(0, 10, n)] += 2
    truth = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = np.array([rng.choice(10, p=p) for p in truth])
    sharp = np.exp(logits * true_temperature)
    return sharp / sharp.sum(axis=1, keepdims=True), labels


def test_temperature_scaling_recovers_a_known_over_confidence():
    from fmnist_lib.calibration import fit_temperature, reliability, with_temperature

    proba, labels = _overconfident()
    temperature = fit_temperature(proba, labels)
    assert temperature == pytest.approx(2.5, rel=0.1)
    correct = proba.argmax(axis=1) == labels
    before = reliability(proba.max(axis=1), correct)
    after = reliability(with_temperature(proba, temperature).max(axis=1), correct)
    gap = lambda t: float(np.average(abs(t["confidence"] - t["accuracy"]), weights=t["images"]))  # noqa: E731
    assert gap(after) < 0.03 < gap(before)
    assert (with_temperature(proba, temperature).argmax(axis=1) == proba.argmax(axis=1)).all()


def test_reliability_puts_a_confidence_on_an_edge_in_the_bin_above():
    # sklearn's calibration_curve puts 0.5 in the bin below (np.searchsorted), which would
    # move the published reliability diagrams: the table keeps np.digitize's binning.
    from fmnist_lib.calibration import reliability

    confidence = np.array([0.0, 0.05, 0.1, 0.45, 0.5, 0.55, 0.95, 1.0])
    correct = np.array([0, 1, 1, 1, 0, 1, 1, 1], dtype=bool)
    table = reliability(confidence, correct)
    assert table.index.name == "bin" and table.index.tolist() == [0, 1, 4, 5, 9]
    assert table.columns.tolist() == ["confidence", "accuracy", "images"]
    np.testing.assert_allclose(table["confidence"], [0.025, 0.1, 0.45, 0.525, 0.975])
    np.testing.assert_allclose(table["accuracy"], [0.5, 1, 1, 0.5, 1])
    assert table["images"].tolist() == [2, 1, 1, 2, 2]


def test_the_threshold_withholds_answers_more_likely_wrong_than_right():
    from fmnist_lib.calibration import calibrate, choose_threshold, withholding

    proba, labels = _overconfident()
    calibration = calibrate(proba, labels)
    # Calibrated, an answer below about 0.5 is as likely wrong as right.
    assert 0.35 < calibration.threshold < 0.65
    confidence = calibration.confidence(proba)
    correct = proba.argmax(axis=1) == labels
    effect = withholding(confidence, correct, calibration.threshold)
    assert effect["wrong stopped"] > effect["right withheld"]
    assert effect["accuracy of the answers given"] > correct.mean()
    # Withholding never pays when every answer is right.
    assert choose_threshold(confidence, np.ones_like(correct)) == 0.0
    # The cut falls between two answers: 2 wrong below 0.3, 2 right above.
    cut = choose_threshold(np.array([0.1, 0.2, 0.4, 0.9]), np.array([0, 0, 1, 1]))
    assert cut == pytest.approx(0.3)
