"""Figures shared by the chapters and the app. Each function returns a matplotlib Figure, except
`enlarge` and `heat_overlay`, which return RGB pixels for the app to show as they are."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

_LINE_INCHES = 10 / 72  # one line of 8-point title text, with its leading


def _mosaic(
    images: Sequence[np.ndarray],
    titles: Sequence[str] | None,
    ncols: int,
    size: float,
    value_range: tuple[float, float] | None,
    suptitle: str | None = None,
    row_labels: Sequence[str] | None = None,
) -> Figure:
    """Images in a grid of ``size``-inch cells drawn on one Axes: one Axes per image made a
    30-image figure cost ~0.7 s to draw and save, this ~0.15 s (the chapters log one per run)."""
    n = len(images)
    nrows = max(1, -(-n // ncols))
    ncols = min(ncols, max(n, 1))
    lines = max((str(t).count("\n") + 1 for t in titles), default=0) if titles else 0
    gap = 0.06  # between cells, in cell widths
    band = (lines * _LINE_INCHES + 0.04) / size if lines else 0.0  # title space, in cell widths
    cell_w, cell_h = 1 + gap, 1 + gap + band
    left = max((len(label) for label in row_labels), default=0) * 0.075 if row_labels else 0.0
    top = 0.4 if suptitle else 0.0
    width, height = ncols * cell_w * size + left, nrows * cell_h * size + top
    fig = plt.figure(figsize=(width, height))
    ax = fig.add_axes((left / width, 0, 1 - left / width, 1 - top / height))
    ax.axis("off")
    vmin, vmax = value_range or (None, None)
    for k, image in enumerate(images):
        image = np.asarray(image)
        row, col = divmod(k, ncols)
        scale = 1 / max(image.shape[:2])  # the longer side fills the cell, aspect kept
        h, w = image.shape[0] * scale, image.shape[1] * scale
        x0 = col * cell_w + gap / 2 + (1 - w) / 2
        y0 = row * cell_h + band + gap / 2 + (1 - h) / 2
        ax.imshow(image, cmap="gray", vmin=vmin, vmax=vmax, extent=(x0, x0 + w, y0 + h, y0))
        if titles is not None:
            ax.text(x0 + w / 2, y0 - gap / 4, titles[k], ha="center", va="bottom", fontsize=8)
    for row, label in enumerate(row_labels or []):
        ax.text(-gap, row * cell_h + band + gap / 2 + 0.5, label, ha="right", va="center",
                fontsize=9)  # fmt: skip
    ax.set_xlim(0, ncols * cell_w)
    ax.set_ylim(nrows * cell_h, 0)
    ax.set_aspect("auto")
    if suptitle:
        fig.suptitle(suptitle, y=1 - 0.08 / height)
    return fig


def show_images(
    images: np.ndarray,
    titles: Sequence[str] | None = None,
    ncols: int = 10,
    size: float = 1.3,
    suptitle: str | None = None,
    value_range: tuple[float, float] | None = (0, 255),
) -> Figure:
    """A grid of grey images (n, 28, 28), light item on black as the model sees it, each in a
    ``size``-inch cell with its title above it (RGB images and other sizes are shown as they
    are, aspect kept). ``value_range=None`` stretches each image's own range to black-white."""
    return _mosaic(images, titles, ncols, size, value_range, suptitle=suptitle)


def class_grid(
    images: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    per_class: int = 10,
    seed: int = 0,
) -> Figure:
    """``per_class`` random images of each class, one row per class, labelled on the left."""
    rng = np.random.default_rng(seed)
    picks = [
        rng.choice(np.flatnonzero(labels == c), size=per_class, replace=False)
        for c in range(len(class_names))
    ]
    return _mosaic(
        images[np.concatenate(picks)], None, per_class, 0.9, (0, 255), row_labels=class_names
    )


def class_counts_bar(counts: pd.DataFrame) -> Figure:
    """Grouped bars of images per class (rows of ``counts``) for each split (its columns)."""
    fig, ax = plt.subplots(figsize=(9, 3.5))
    counts.plot.bar(ax=ax, width=0.8)
    ax.set_ylabel("images")
    ax.set_xlabel("")
    ax.tick_params(axis="x", labelrotation=30)
    ax.legend(title="split")
    fig.tight_layout()
    return fig


def mean_images(images: np.ndarray, labels: np.ndarray, class_names: Sequence[str]) -> Figure:
    """The average image of each class."""
    means = np.stack([images[labels == c].mean(axis=0) for c in range(len(class_names))])
    return show_images(means, titles=list(class_names), ncols=len(class_names), size=1.4)


def intensity_histograms(
    images: np.ndarray, labels: np.ndarray, class_names: Sequence[str]
) -> Figure:
    """Per class, the histogram of non-zero pixel intensities (the background, exactly 0,
    would dwarf everything else and is left out)."""
    fig, axes = plt.subplots(2, 5, figsize=(13, 4.8), sharex=True, sharey=True)
    for c, (ax, name) in enumerate(zip(axes.flat, class_names, strict=True)):
        pixels = images[labels == c].ravel()
        ax.hist(pixels[pixels > 0], bins=51, range=(1, 255), density=True, color="C0")
        ax.set_title(name, fontsize=10)
    for ax in axes[1]:
        ax.set_xlabel("intensity")
    fig.tight_layout()
    return fig


def _class_heatmap(matrix: np.ndarray, class_names: Sequence[str], figsize, **heatmap_kw):
    """An annotated class-by-class heatmap; returns the figure and its axes."""
    fig, ax = plt.subplots(figsize=figsize)
    import seaborn as sns  # here, not at the top: the app never draws one and starts faster

    sns.heatmap(
        matrix, annot=True, xticklabels=class_names, yticklabels=class_names, ax=ax, **heatmap_kw
    )
    return fig, ax


def distance_heatmap(distances: np.ndarray, class_names: Sequence[str], unit: str) -> Figure:
    """A symmetric matrix of distances between classes as an annotated heatmap."""
    fig, _ = _class_heatmap(
        distances, class_names, (7.5, 6), fmt=".0f", cmap="viridis", cbar_kws={"label": unit}
    )
    fig.tight_layout()
    return fig


def confusion_matrix(confusion: np.ndarray, class_names: Sequence[str], title: str = "") -> Figure:
    """Counts of true class (rows) against predicted class (columns); the diagonal is right."""
    fig, ax = _class_heatmap(confusion, class_names, (7.5, 6.2), fmt="d", cmap="Blues", cbar=False)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def learning_curves(history: pd.DataFrame, title: str = "") -> Figure:
    """Loss and accuracy per epoch, training against validation. ``history`` has one row per
    epoch and the columns Keras logs: loss, accuracy, val_loss, val_accuracy."""
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 3.8))
    epochs = np.arange(1, len(history) + 1)
    for ax, metric in ((ax_loss, "loss"), (ax_acc, "accuracy")):
        ax.plot(epochs, history[metric], "o-", ms=3, label="training")
        ax.plot(epochs, history[f"val_{metric}"], "o-", ms=3, label="validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def compare_learning_curves(histories: dict[str, pd.DataFrame], metric: str = "loss") -> Figure:
    """One metric per epoch for several runs: solid lines training, dashed validation."""
    fig, ax = plt.subplots(figsize=(8, 4))
    for k, (label, history) in enumerate(histories.items()):
        epochs = np.arange(1, len(history) + 1)
        ax.plot(epochs, history[metric], "-", color=f"C{k}", label=f"{label}, training")
        ax.plot(epochs, history[f"val_{metric}"], "--", color=f"C{k}", label=f"{label}, validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def misclassified(
    images: np.ndarray,
    y_true: np.ndarray,
    y_pred: np.ndarray,
    indices: np.ndarray,
    class_names: Sequence[str],
    n: int = 20,
) -> Figure:
    """The first ``n`` of ``indices``, each titled 'true → predicted'."""
    picks = np.asarray(indices)[:n]
    titles = [f"{class_names[y_true[k]]}\n→ {class_names[y_pred[k]]}" for k in picks]
    return show_images(images[picks], titles=titles, ncols=10, size=1.35)


def per_class_accuracy(table: pd.DataFrame) -> Figure:
    """Grouped horizontal bars: one row per class, one bar per model (the table's columns)."""
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(table) * max(1, len(table.columns) / 2) + 1))
    table.iloc[::-1].plot.barh(ax=ax, width=0.8)
    ax.set_xlabel("accuracy on the test set")
    ax.set_ylabel("")
    ax.set_xlim(min(0.5, float(table.min().min()) - 0.05), 1.0)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    return fig


def hog_picture(image: np.ndarray, orientations=9, pixels_per_cell=4, cells_per_block=2) -> Figure:
    """An image next to its histogram of oriented gradients, drawn as the dominant edge
    directions of each cell."""
    from skimage.feature import hog

    _, picture = hog(
        image,
        orientations=orientations,
        pixels_per_cell=(pixels_per_cell,) * 2,
        cells_per_block=(cells_per_block,) * 2,
        visualize=True,
    )
    fig, (left, right) = plt.subplots(1, 2, figsize=(5, 2.7))
    left.imshow(image, cmap="gray")
    left.set_title("image")
    right.imshow(picture, cmap="magma")
    right.set_title("HOG: edge directions per cell")
    for ax in (left, right):
        ax.axis("off")
    fig.tight_layout()
    return fig


def explained_variance(ratios: np.ndarray, marks: Sequence[int] = (50, 100)) -> Figure:
    """Cumulative share of the variance kept by the first k principal components."""
    cumulative = np.cumsum(ratios)
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot(np.arange(1, len(cumulative) + 1), cumulative)
    for k in marks:
        ax.axvline(k, color="grey", ls=":")
        ax.annotate(
            f"{k}: {cumulative[k - 1]:.0%}",
            (k, cumulative[k - 1]),
            xytext=(5, -15),
            textcoords="offset points",
        )
    ax.set_xlabel("number of principal components")
    ax.set_ylabel("share of pixel variance kept")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def feature_maps(model, image: np.ndarray, layer: int = 0, n: int = 16) -> Figure:
    """The first ``n`` feature maps that layer ``layer`` of a Keras model computes for one
    image (28, 28, 1) in [0, 1], next to the image."""
    import keras

    probe = keras.Model(model.inputs[0], model.layers[layer].output)
    maps = np.asarray(probe(image[np.newaxis]), dtype=np.float32)[0]  # bfloat16 too
    n = min(n, maps.shape[-1])
    fig, axes = plt.subplots(2, n // 2 + 1, figsize=(1.3 * (n // 2 + 1), 2.9))
    axes[0, 0].imshow(image[..., 0], cmap="gray")
    axes[0, 0].set_title("input", fontsize=8)
    for k, ax in enumerate(axes.flat[1:]):
        if k < n:
            ax.imshow(maps[..., k], cmap="magma")
            ax.set_title(f"filter {k}", fontsize=8)
    for ax in axes.flat:
        ax.axis("off")
    fig.tight_layout()
    return fig


def accuracy_vs_time(table: pd.DataFrame) -> Figure:
    """Test accuracy against training time (log scale), one labelled point per model (rows of
    a `tracking.summary_table`)."""
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.scatter(table["fit time (s)"], table["test accuracy"], color="C0")
    for name, row in table.iterrows():
        ax.annotate(
            name, (row["fit time (s)"], row["test accuracy"]), xytext=(5, 4),
            textcoords="offset points",
        )  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlabel("training time (s, log scale)")
    ax.set_ylabel("test accuracy")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def accuracy_heatmap(table: pd.DataFrame) -> Figure:
    """Per-class test accuracy, classes as rows and models as columns, the weakest in red."""
    fig, ax = plt.subplots(figsize=(1.2 * len(table.columns) + 2.5, 5.5))
    import seaborn as sns

    sns.heatmap(table, annot=True, fmt=".3f", cmap="RdYlGn", vmin=0.5, vmax=1, ax=ax, cbar=False)
    ax.set_xlabel("")
    ax.set_ylabel("")
    ax.xaxis.tick_top()
    fig.tight_layout()
    return fig


def enlarge(image: np.ndarray, scale: int = 8) -> np.ndarray:
    """A small grey image scaled up by repeating pixels, so that a browser shows sharp 28x28
    pixels instead of a blur."""
    image = np.asarray(image)
    return np.repeat(np.repeat(image, scale, axis=0), scale, axis=1)


def heat_overlay(image: np.ndarray, heat: np.ndarray, scale: int = 8) -> np.ndarray:
    """A 28x28 grey image with a saliency map (values in [0, 1], see `explain`) laid over it in
    colour, as (28 * scale, 28 * scale, 3) uint8 RGB. Where the map is 0 the image shows through."""
    grey = np.repeat(np.asarray(image, dtype=np.float64)[..., np.newaxis], 3, axis=-1) / 255
    heat = np.clip(np.asarray(heat, dtype=np.float64), 0, 1)
    colour = plt.get_cmap("inferno")(heat)[..., :3]
    alpha = 0.75 * heat[..., np.newaxis]
    blended = (1 - alpha) * grey * 0.8 + alpha * colour
    return enlarge(np.rint(blended * 255).astype(np.uint8), scale)


def saliency_maps(
    images: np.ndarray, maps: np.ndarray, titles: Sequence[str], method: str
) -> Figure:
    """Each image above its saliency map overlay (`heat_overlay`), with a title per column."""
    n = len(images)
    fig, axes = plt.subplots(2, n, figsize=(n * 1.4, 3.2), squeeze=False)
    for k in range(n):
        axes[0, k].imshow(images[k], cmap="gray", vmin=0, vmax=255)
        axes[0, k].set_title(titles[k], fontsize=8)
        axes[1, k].imshow(heat_overlay(images[k], maps[k], scale=1))
    for ax in axes.flat:
        ax.axis("off")
    fig.suptitle(f"Where the model looked ({method}): brighter is stronger evidence", fontsize=10)
    fig.tight_layout()
    return fig


def optimization_history(trials: pd.DataFrame) -> Figure:
    """An Optuna study's trials in order (see `tuning.trials_table`): each trial's validation
    accuracy (pruned ones hollow, at the epoch they stopped) and the best so far."""
    fig, ax = plt.subplots(figsize=(8, 3.8))
    done = trials["state"] == "complete"
    pruned = trials["state"] == "pruned"
    ax.plot(trials.index[done], trials["val accuracy"][done], "o", label="complete trial")
    ax.plot(
        trials.index[pruned], trials["val accuracy"][pruned], "o", mfc="none", label="pruned trial"
    )
    best = trials["val accuracy"].where(done).cummax().ffill()  # a pruned trial changes nothing
    ax.step(trials.index, best, where="post", color="C2", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel("validation accuracy")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def param_importances(importances: pd.Series) -> Figure:
    """How much each hyperparameter mattered (`tuning.importances`), as horizontal bars."""
    ordered = importances.sort_values()
    fig, ax = plt.subplots(figsize=(6, 0.5 * len(ordered) + 1))
    ax.barh(ordered.index, ordered.to_numpy())
    ax.set_xlabel("share of the variation in validation accuracy")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


def grid_search(cv_results: dict, x: str, lines: str, x_label: str, line_label: str) -> Figure:
    """A scikit-learn grid search's mean accuracy against one parameter (``x``, e.g.
    ``"param_svc__C"``, on a log axis), one line per value of another (``lines``): solid for
    cross-validation, dashed for the training folds (the search needs ``return_train_score``)."""
    table = pd.DataFrame(cv_results)
    fig, ax = plt.subplots(figsize=(7, 4))
    for k, (value, rows) in enumerate(table.groupby(lines, sort=True)):
        rows = rows.sort_values(x)
        label = f"{line_label} = {value:g}"
        ax.plot(rows[x].astype(float), rows["mean_test_score"], "o-", color=f"C{k}", label=label)
        ax.plot(rows[x].astype(float), rows["mean_train_score"], "--", color=f"C{k}", alpha=0.6)
    ax.set_xscale("log")
    ax.set_xlabel(x_label)
    ax.set_ylabel("accuracy (solid: cross-validation, dashed: training folds)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def learning_rate_sweep(histories: dict[str, pd.DataFrame]) -> Figure:
    """Training loss per epoch for several learning rates (``{label: history}``), on a log
    scale: too small crawls, right falls, too large stalls or blows up."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, history in histories.items():
        loss = np.asarray(history["loss"], dtype=float)
        epochs = np.arange(1, len(loss) + 1)
        ax.plot(epochs, np.where(np.isfinite(loss), loss, np.nan), "o-", ms=3, label=label)
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss (cross-entropy)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def gradient_descent_paths(paths: dict[str, np.ndarray], loss) -> Figure:
    """Steps of gradient descent on a one-weight loss: ``paths`` maps a label to the weight
    after each step, ``loss`` is the function of the weight; each path drawn on the curve."""
    fig, axes = plt.subplots(1, len(paths), figsize=(4 * len(paths), 3.4), sharey=True)
    every = np.concatenate(list(paths.values()))
    low, high = np.percentile(every, [0, 100])
    low, high = min(low, -3.0), max(high, 9.0)
    grid = np.linspace(low, high, 200)
    for ax, (label, weights) in zip(np.atleast_1d(axes), paths.items(), strict=True):
        ax.plot(grid, loss(grid), color="0.6")
        ax.plot(weights, loss(weights), "o-", color="C3", ms=4)
        ax.set_title(label)
        ax.set_xlabel("weight")
        ax.set_ylim(0, float(loss(grid).max()))
        ax.grid(alpha=0.3)
    np.atleast_1d(axes)[0].set_ylabel("loss")
    fig.tight_layout()
    return fig


def reliability_diagram(tables: dict[str, pd.DataFrame]) -> Figure:
    """Accuracy against confidence, one line per table of `calibration.reliability` (bins of
    confidence with their mean confidence, accuracy and number of images). On the diagonal, a
    model is as sure as it is right; below it, over-confident."""
    fig, ax = plt.subplots(figsize=(5, 4.5))
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="calibrated")
    for name, table in tables.items():
        ax.plot(table["confidence"], table["accuracy"], marker="o", label=name)
    ax.set_xlabel("confidence (probability of the answer)")
    ax.set_ylabel("accuracy of those answers")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend()
    fig.tight_layout()
    return fig
