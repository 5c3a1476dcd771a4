"""Figures shared by the chapters and the app. Each function returns a matplotlib Figure."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure


def show_images(
    images: np.ndarray,
    titles: Sequence[str] | None = None,
    ncols: int = 10,
    size: float = 1.3,
    suptitle: str | None = None,
) -> Figure:
    """A grid of grey images (n, 28, 28), light item on black as the model sees it."""
    n = len(images)
    nrows = max(1, -(-n // ncols))
    ncols = min(ncols, max(n, 1))
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(ncols * size, nrows * size * 1.15), squeeze=False
    )
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k < n:
            ax.imshow(images[k], cmap="gray", vmin=0, vmax=255)
            if titles is not None:
                ax.set_title(titles[k], fontsize=8)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def class_grid(
    images: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    per_class: int = 10,
    seed: int = 0,
) -> Figure:
    """``per_class`` random images of each class, one row per class, labelled on the left."""
    rng = np.random.default_rng(seed)
    n_classes = len(class_names)
    fig, axes = plt.subplots(
        n_classes, per_class, figsize=(per_class * 0.9, n_classes * 0.95), squeeze=False
    )
    for c, name in enumerate(class_names):
        picks = rng.choice(np.flatnonzero(labels == c), size=per_class, replace=False)
        for ax, k in zip(axes[c], picks, strict=True):
            ax.imshow(images[k], cmap="gray", vmin=0, vmax=255)
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
        axes[c, 0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
    fig.tight_layout()
    return fig


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


def distance_heatmap(distances: np.ndarray, class_names: Sequence[str], unit: str) -> Figure:
    """A symmetric matrix of distances between classes as an annotated heatmap."""
    fig, ax = plt.subplots(figsize=(7.5, 6))
    sns.heatmap(
        distances,
        annot=True,
        fmt=".0f",
        cmap="viridis",
        xticklabels=class_names,
        yticklabels=class_names,
        cbar_kws={"label": unit},
        ax=ax,
    )
    fig.tight_layout()
    return fig
