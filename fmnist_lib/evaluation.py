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
    def misclassified(self) -> np.ndarray:
        """Indices of the wrongly classified images, the most confident mistakes first when
        probabilities are known."""
        wrong = np.flatnonzero(self.y_pred != self.y_true)
        if self.proba is not None:
            wrong = wrong[np.argsort(-self.proba[wrong].max(axis=1), kind="stable")]
        return wrong

    def metrics(self, prefix: str = "test_") -> dict[str, float]:
        """The scores as flat MLflow metrics: ``test_accuracy``, ``test_macro_f1``,
        ``test_log_loss`` and one ``test_class_accuracy_<class>`` per class."""
        out = {f"{prefix}accuracy": self.accuracy, f"{prefix}macro_f1": self.macro_f1}
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
