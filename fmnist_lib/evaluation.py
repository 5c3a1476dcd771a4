"""Scores of a classifier on labelled images: accuracy, macro-F1, log-loss, per-class accuracy,
the confusion matrix and the misclassified examples."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn import metrics


@dataclass(frozen=True, eq=False)
class Evaluation:
    """The scores of one model on one labelled set.

    ``y_true`` and ``y_pred`` are int arrays (n,); ``proba`` the (n, 10) class probabilities,
    or None for a model that gives none (then ``log_loss`` is None too).
    """

    y_true: np.ndarray
    y_pred: np.ndarray
    proba: np.ndarray | None
    class_names: tuple[str, ...]
    accuracy: float
    macro_f1: float
    log_loss: float | None
    per_class_accuracy: pd.Series
    confusion: np.ndarray
    report: str

    @property
    def accuracy_interval(self) -> tuple[float, float]:
        """The 95% Wilson interval of `accuracy` (see `accuracy_interval`)."""
        return accuracy_interval(int((self.y_pred == self.y_true).sum()), len(self.y_true))

    @property
    def misclassified(self) -> np.ndarray:
        """Indices of the wrongly classified images, the most confident mistakes first when
        probabilities are known."""
        wrong = np.flatnonzero(self.y_pred != self.y_true)
        if self.proba is not None:
            wrong = wrong[np.argsort(-self.proba[wrong].max(axis=1), kind="stable")]
        return wrong

    def metrics(self, prefix: str = "test_") -> dict[str, float]:
        """The scores as flat MLflow metrics: ``test_accuracy`` with its 95% interval
        (``test_accuracy_ci_low``, ``_high``), ``test_macro_f1``, ``test_log_loss`` and one
        ``test_class_accuracy_<class>`` per class."""
        low, high = self.accuracy_interval
        out = {
            f"{prefix}accuracy": self.accuracy,
            f"{prefix}accuracy_ci_low": low,
            f"{prefix}accuracy_ci_high": high,
            f"{prefix}macro_f1": self.macro_f1,
        }
        if self.log_loss is not None:
            out[f"{prefix}log_loss"] = self.log_loss
        for name, value in self.per_class_accuracy.items():
            out[f"{prefix}class_accuracy_{metric_slug(name)}"] = float(value)
        return out


def metric_slug(class_name: str) -> str:
    """A class name as a metric-name suffix: ``T-shirt/top`` -> ``t_shirt_top``."""
    return re.sub(r"[^a-z0-9]+", "_", class_name.lower()).strip("_")


def evaluate(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    class_names: tuple[str, ...],
    proba: np.ndarray | None = None,
) -> Evaluation:
    """Score predictions ``y_pred`` (and probabilities ``proba``, if any) against ``y_true``."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    labels = np.arange(len(class_names))
    confusion = metrics.confusion_matrix(y_true, y_pred, labels=labels)
    totals = confusion.sum(axis=1)
    per_class = np.divide(np.diag(confusion), totals, out=np.zeros(len(labels)), where=totals > 0)
    return Evaluation(
        y_true=y_true,
        y_pred=y_pred,
        proba=proba,
        class_names=tuple(class_names),
        accuracy=float(metrics.accuracy_score(y_true, y_pred)),
        macro_f1=float(metrics.f1_score(y_true, y_pred, average="macro", labels=labels)),
        log_loss=None if proba is None else float(metrics.log_loss(y_true, proba, labels=labels)),
        per_class_accuracy=pd.Series(per_class, index=pd.Index(class_names, name="class")),
        confusion=confusion,
        report=metrics.classification_report(
            y_true, y_pred, labels=labels, target_names=class_names, digits=4, zero_division=0
        ),
    )


def accuracy_interval(correct: int, total: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson's interval for an accuracy of ``correct`` right answers out of ``total``: where
    the model's accuracy on all such images lies, with ``confidence``, given this sample.
    (At 92% on 10,000 images: about +-0.5 point.)"""
    from scipy.stats import binomtest

    if total <= 0:
        raise ValueError("An accuracy needs at least one image.")
    # "wilson" is the score interval without continuity correction ("wilsoncc" adds one).
    ci = binomtest(correct, total).proportion_ci(confidence, method="wilson")
    return float(ci.low), float(ci.high)


@dataclass(frozen=True)
class PairedComparison:
    """Two models scored on the same images: McNemar's exact test on the images that exactly
    one of them gets right. ``difference`` is accuracy A minus accuracy B."""

    name_a: str
    name_b: str
    accuracy_a: float
    accuracy_b: float
    only_a: int  # images A gets right and B gets wrong
    only_b: int
    p_value: float

    @property
    def difference(self) -> float:
        return self.accuracy_a - self.accuracy_b

    @property
    def significant(self) -> bool:
        """At the 5% level."""
        return self.p_value < 0.05

    @property
    def verdict(self) -> str:
        """The comparison in words, from the test: which model is better, or that the
        difference is within noise."""
        points = 100 * abs(self.difference)
        images = "image" if self.only_a == 1 else "images"
        evidence = f"{self.only_a} {images} right only for {self.name_a}, {self.only_b} only for "
        evidence += f"{self.name_b}; McNemar p = {self.p_value:.2g}"
        if not self.significant:
            return (
                f"{self.name_a} and {self.name_b} differ by {points:.2f} points, within noise "
                f"({evidence})"
            )
        better, worse = (
            (self.name_a, self.name_b) if self.difference > 0 else (self.name_b, self.name_a)
        )
        return f"{better} is better than {worse} by {points:.2f} points ({evidence})"


def paired_comparison(
    y_true, pred_a, pred_b, name_a: str = "A", name_b: str = "B"
) -> PairedComparison:
    """Compare two models' predictions on the same labelled images with McNemar's exact test:
    under "neither is better", the images that only one model gets right split 50/50 between
    them, and the p-value says how unusual the split seen is."""
    from scipy.stats import binomtest

    y_true = np.asarray(y_true)
    right_a, right_b = np.asarray(pred_a) == y_true, np.asarray(pred_b) == y_true
    only_a, only_b = int((right_a & ~right_b).sum()), int((~right_a & right_b).sum())
    p_value = binomtest(only_a, only_a + only_b, 0.5).pvalue if only_a + only_b else 1.0
    return PairedComparison(
        name_a, name_b, float(right_a.mean()), float(right_b.mean()), only_a, only_b,
        float(p_value),
    )  # fmt: skip


@dataclass(frozen=True)
class FitDiagnosis:
    """What a Keras run's learning curves say (see `diagnose_fit`)."""

    epochs: int
    best_epoch: int  # 1-based epoch of the lowest validation loss
    rise: float  # final validation loss over its lowest, minus 1 (0.1: 10% above)
    gap: float  # final training accuracy minus validation accuracy, in points
    overfits: bool

    @property
    def sentence(self) -> str:
        """The diagnosis in words, for the prose."""
        if self.overfits:
            loss = (
                f"The validation loss was lowest at epoch {self.best_epoch} of {self.epochs} and "
                f"ends {100 * self.rise:.0f}% above that: the network overfits after epoch "
                f"{self.best_epoch}, learning details of its training images that do not carry "
                "over."
            )
        else:
            loss = (
                "The validation loss is at or near its lowest at the end ("
                + (
                    f"lowest at epoch {self.best_epoch} of {self.epochs}, "
                    f"{100 * self.rise:.1f}% above that at the last"
                    if self.best_epoch < self.epochs
                    else "lowest at the last epoch"
                )
                + "): no sign of overfitting within this budget."
            )
        if self.gap < 0:
            accuracy = (
                f" Training accuracy ends {-self.gap:.1f} points below validation accuracy: "
                "Keras measures it with dropout and augmentation switched on and averages it "
                "over the epoch while the weights still change, so this is what regularisation "
                "does, not underfitting."
            )
        else:
            accuracy = (
                f" Training accuracy ends {self.gap:.1f} points above validation accuracy"
                + (", a gap that says the network memorises." if self.gap > 3 else ".")
            )
        return loss + accuracy


def diagnose_fit(history, tolerance: float = 0.05) -> FitDiagnosis:
    """Read a run's learning curves (a table with ``loss``, ``accuracy``, ``val_loss`` and
    ``val_accuracy`` per epoch): where validation loss bottomed out, whether it then rose by
    more than ``tolerance`` (overfitting), and the final gap between training and validation
    accuracy. A training accuracy below validation accuracy is not underfitting: Keras measures
    it with dropout and augmentation on, averaged over an epoch of changing weights."""
    val_loss = np.asarray(history["val_loss"], dtype=float)
    best = int(np.argmin(val_loss))
    rise = float(val_loss[-1] / val_loss[best] - 1)
    last = history.iloc[-1] if hasattr(history, "iloc") else {k: v[-1] for k, v in history.items()}
    gap = 100 * float(last["accuracy"] - last["val_accuracy"])
    return FitDiagnosis(
        epochs=len(val_loss),
        best_epoch=best + 1,
        rise=rise,
        gap=gap,
        overfits=rise > tolerance and best < len(val_loss) - 1,
    )
