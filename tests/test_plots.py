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
    (ax,) = fig.get_axes()
    assert [t.get_text() for t in ax.texts] == [str(i) for i in range(7)]
    assert len(ax.images) == 7
    # 3 rows of 3: the seventh image starts the third row, under the first
    first, fourth, seventh = (ax.images[k].get_extent() for k in (0, 3, 6))
    assert seventh[0] == first[0] and first[3] < fourth[3] < seventh[3]
    np.testing.assert_array_equal(ax.images[6].get_array(), x[6])


def test_show_images_keeps_each_picture_s_shape_and_colours():
    wide = np.zeros((20, 40, 3), dtype=np.uint8)
    (ax,) = plots.show_images([wide, np.zeros((28, 28))], ncols=2, suptitle="s").get_axes()
    left, right, bottom, top = ax.images[0].get_extent()
    assert (right - left) == pytest.approx(2 * (bottom - top))
    assert ax.images[0].get_array().shape == (20, 40, 3)


def test_class_grid_has_a_row_per_class(labelled):
    x, y = labelled
    fig = plots.class_grid(x, y, NAMES, per_class=4)
    (ax,) = fig.get_axes()
    assert len(ax.images) == 40
    assert [t.get_text() for t in ax.texts] == list(NAMES)
    # each row shows images of its own class
    for c in range(10):
        for image in ax.images[4 * c : 4 * c + 4]:
            k = next(i for i in range(60) if np.array_equal(x[i], image.get_array()))
            assert y[k] == c


def test_class_figures(labelled):
    x, y = labelled
    assert len(plots.mean_images(x, y, NAMES).get_axes()[0].images) == 10
    assert len(plots.intensity_histograms(x, y, NAMES).get_axes()) == 10
    counts = pd.DataFrame({"train": range(10)}, index=list(NAMES))
    bars = plots.class_counts_bar(counts).get_axes()[0].patches
    assert [b.get_height() for b in bars] == list(range(10))
    heat = plots.distance_heatmap(np.eye(10), NAMES, unit="u")
    assert [t.get_text() for t in heat.get_axes()[0].get_xticklabels()] == list(NAMES)


def test_model_figures(labelled):
    x, y = labelled
    confusion = np.diag(np.arange(10))
    cells = plots.confusion_matrix(confusion, NAMES, title="t").get_axes()[0].texts
    assert [int(t.get_text()) for t in cells][:11] == [0] + [0] * 10  # first row, then (1,0)
    history = pd.DataFrame(
        {"loss": [2, 1], "accuracy": [0.5, 0.7], "val_loss": [2.1, 1.2], "val_accuracy": [0.4, 0.6]}
    )
    curves = plots.learning_curves(history).get_axes()
    assert [len(ax.lines) for ax in curves] == [2, 2]
    compared = plots.compare_learning_curves({"a": history, "b": history}).get_axes()[0]
    assert len(compared.lines) == 4
    wrong = plots.misclassified(x, y, (y + 1) % 10, np.arange(5), NAMES, n=3).get_axes()[0]
    assert [t.get_text() for t in wrong.texts][0] == "a\n→ b"
    assert len(wrong.images) == 3
    table = pd.DataFrame({"m1": np.linspace(0.6, 0.9, 10), "m2": 0.8}, index=list(NAMES))
    bars = plots.per_class_accuracy(table).get_axes()[0].patches
    assert len(bars) == 20
    assert len(plots.explained_variance(np.full(100, 0.01)).get_axes()[0].lines) == 1 + 2
    assert len(plots.hog_picture(x[0]).get_axes()) == 2


def test_feature_maps_of_a_keras_layer(labelled):
    from fmnist_lib.models import build_dropout_cnn

    x, _ = labelled
    fig = plots.feature_maps(build_dropout_cnn(), x[0, ..., None] / 255.0, layer=0, n=8)
    assert sum(bool(ax.images) for ax in fig.get_axes()) == 1 + 8


@pytest.fixture
def study():
    """A small Optuna study with complete and pruned trials, in memory, trained on nothing."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(0))

    def objective(trial):
        rate = trial.suggest_float("learning_rate", 0, 1)
        filters = trial.suggest_categorical("filters", ["small", "large"])
        value = (
            0.8 * rate + (0.1 if filters == "large" else 0) + 0.01 * trial.suggest_int("d", 1, 5)
        )
        trial.report(value / 2, 0)
        if trial.number % 4 == 3:
            raise optuna.TrialPruned()
        return value

    study.optimize(objective, n_trials=12)
    return study


def test_optimization_history_plots_the_study_s_trials(study):
    # Optuna's plot_optimization_history is not used: it leaves pruned trials out, draws the
    # best value as a line rather than steps, and switches every later figure to ggplot style.
    from optuna.trial import TrialState

    from fmnist_lib import tuning

    ax = plots.optimization_history(tuning.trials_table(study)).get_axes()[0]
    done, pruned, best = ax.get_lines()
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    stopped = [t for t in study.trials if t.state == TrialState.PRUNED]
    assert done.get_xdata().tolist() == [t.number for t in complete]
    assert done.get_ydata().tolist() == [t.value for t in complete]
    assert pruned.get_xdata().tolist() == [t.number for t in stopped] != []
    assert pruned.get_ydata().tolist() == [t.intermediate_values[0] for t in stopped]
    # The best so far: a pruned trial leaves it as it was.
    so_far = [
        max((t.value for t in complete if t.number <= n), default=np.nan)
        for n in range(len(study.trials))
    ]
    np.testing.assert_array_equal(best.get_ydata(), so_far)
    assert best.get_drawstyle() == "steps-post"


def test_param_importances_plots_optuna_s_importances(study):
    import optuna

    from fmnist_lib import tuning

    ax = plots.param_importances(tuning.importances(study)).get_axes()[0]
    expected = optuna.importance.get_param_importances(study)  # the default evaluator, as today
    drawn = {
        tick.get_text(): bar.get_width()
        for tick, bar in zip(ax.get_yticklabels(), ax.patches, strict=True)
    }
    assert drawn == pytest.approx(expected, rel=1e-12)
    assert list(drawn) == sorted(expected, key=expected.get)  # the largest at the top
