"""The shared figures draw what they are given."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from fmnist_lib import plots

NAMES = tuple("abcdefghij")


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


@pytest.fixture
def labelled():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(60, 28, 28), dtype=np.uint8)
    return x, np.repeat(np.arange(10), 6)


def test_show_images_lays_out_a_grid(labelled):
    x, _ = labelled
    fig = plots.show_images(x[:7], titles=[str(i) for i in range(7)], ncols=3)
    axes = fig.get_axes()
    assert len(axes) == 9  # 3 rows of 3
    assert [ax.get_title() for ax in axes[:7]] == [str(i) for i in range(7)]
    assert sum(bool(ax.images) for ax in axes) == 7


def test_class_grid_has_a_row_per_class(labelled):
    x, y = labelled
    fig = plots.class_grid(x, y, NAMES, per_class=4)
    axes = fig.get_axes()
    assert len(axes) == 40
    assert [axes[4 * c].get_ylabel() for c in range(10)] == list(NAMES)


def test_class_figures(labelled):
    x, y = labelled
    assert len(plots.mean_images(x, y, NAMES).get_axes()) == 10
    assert len(plots.intensity_histograms(x, y, NAMES).get_axes()) == 10
    counts = pd.DataFrame({"train": range(10)}, index=list(NAMES))
    bars = plots.class_counts_bar(counts).get_axes()[0].patches
    assert [b.get_height() for b in bars] == list(range(10))
    heat = plots.distance_heatmap(np.eye(10), NAMES, unit="u")
    assert [t.get_text() for t in heat.get_axes()[0].get_xticklabels()] == list(NAMES)
