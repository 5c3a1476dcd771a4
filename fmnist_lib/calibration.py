"""Confidence that means something: temperature scaling and the "not sure" threshold, both
fitted on the validation set, and the reliability table that shows them at work."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


def with_temperature(proba: np.ndarray, temperature: float) -> np.ndarray:
    """Probabilities softened (temperature > 1) or sharpened (< 1): the softmax of
    log(p) / temperature. The most probable class stays the same."""
    logits = np.log(np.clip(np.asarray(proba, dtype=np.float64), 1e-12, None)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    scaled = np.exp(logits)
    return scaled / scaled.sum(axis=1, keepdims=True)


def fit_temperature(proba: np.ndarray, y_true: np.ndarray) -> float:
    """The temperature that makes ``proba`` most likely on these labels (the smallest mean
    negative log-likelihood): temperature scaling, fitted on the validation set. A network
    trained to fit its training set is usually over-confident, which gives a temperature above 1."""
    from scipy.optimize import minimize_scalar

    y_true = np.asarray(y_true)

    def loss(log_t: float) -> float:
        p = with_temperature(proba, float(np.exp(log_t)))[np.arange(len(y_true)), y_true]
        return float(-np.log(np.clip(p, 1e-12, None)).mean())

    best = minimize_scalar(loss, bounds=(np.log(0.05), np.log(20)), method="bounded")
    return float(np.exp(best.x))


def choose_threshold(confidence: np.ndarray, correct: np.ndarray) -> float:
    """The confidence below which answers are better withheld: the cut that withholds the most
    wrong answers net of the right ones it withholds too (each counts as much), on the
    validation set. With calibrated confidences this is near 0.5, where an answer is as likely
    wrong as right. 0 when withholding never pays."""
    order = np.argsort(confidence)
    gain = np.cumsum(np.where(np.asarray(correct)[order], -1, 1))  # withhold the k least sure
    if len(gain) == 0 or gain.max() <= 0:
        return 0.0
    k = int(gain.argmax())
    sorted_confidence = np.asarray(confidence, dtype=np.float64)[order]
    upper = sorted_confidence[k + 1] if k + 1 < len(sorted_confidence) else 1.0
    return float((sorted_confidence[k] + upper) / 2)  # halfway to the next answer


@dataclass(frozen=True)
class Calibration:
    """What makes a model's confidence mean something: a temperature and a threshold, both
    chosen on the validation set."""

    temperature: float = 1.0
    threshold: float = 0.0

    def confidence(self, proba: np.ndarray) -> np.ndarray:
        """The calibrated probability of the most probable class, per image."""
        return with_temperature(proba, self.temperature).max(axis=1)

    def sure(self, proba: np.ndarray) -> np.ndarray:
        return self.confidence(proba) >= self.threshold


def calibrate(proba: np.ndarray, y_true: np.ndarray) -> Calibration:
    """Fit the temperature on (validation) probabilities, then the threshold on the calibrated
    confidences."""
    temperature = fit_temperature(proba, y_true)
    confidence = with_temperature(proba, temperature).max(axis=1)
    correct = np.asarray(proba).argmax(axis=1) == np.asarray(y_true)
    return Calibration(temperature, choose_threshold(confidence, correct))


def reliability(confidence: np.ndarray, correct: np.ndarray, bins: int = 10) -> pd.DataFrame:
    """For a reliability diagram: per confidence bin, the images' mean confidence, their
    accuracy and their number. A calibrated model's accuracy equals its confidence."""
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    frame = pd.DataFrame({"bin": which, "confidence": confidence, "correct": correct})
    table = frame.groupby("bin").agg(
        confidence=("confidence", "mean"), accuracy=("correct", "mean"), images=("correct", "size")
    )
    return table


def withholding(confidence: np.ndarray, correct: np.ndarray, threshold: float) -> dict[str, float]:
    """What a threshold does on a set of images: the share of answers withheld, the share of
    right answers withheld, the share of wrong answers stopped, and the accuracy of the
    answers given."""
    correct = np.asarray(correct, dtype=bool)
    withheld = np.asarray(confidence) < threshold
    given = ~withheld
    answered = float(correct[given].mean()) if given.any() else float("nan")
    return {
        "withheld": float(withheld.mean()),
        "right withheld": float((withheld & correct).sum() / max(correct.sum(), 1)),
        "wrong stopped": float((withheld & ~correct).sum() / max((~correct).sum(), 1)),
        "accuracy of the answers given": answered,
    }
