"""The pictures of evaluate and report: matplotlib figures written as PNG files.

Agg and `Figure` objects, never pyplot's global figure registry: nothing needs a display, nothing
leaks between figures, and the same inputs give the same bytes (no timestamp or version in the file).
Sizes are in inches at DPI dots per inch, and no tight bounding box, so a PNG's pixel size is fixed.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before anything imports pyplot (scikit-learn's display does)
# Class names are the user's folder names: `price_$1_$2` is text, not a formula for math-text to parse
# (and fail on, after hours of training). No figure here writes mathematics.
matplotlib.rcParams["text.parse_math"] = False

import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator  # noqa: E402

from pipeline.common import atomic  # noqa: E402

DPI = 100
MAX_WRONG = 16  # the most-confidently-wrong grid: 4 × 4 images
# Above this many classes the confusion figure shows the classes most involved in mistakes only: a
# readable cell is half an inch, and 300 classes would be a 300-inch, gigabyte figure.
MAX_CONFUSION_CLASSES = 20
GRID_COLUMNS = 4


def png_bytes(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()


def save_png(fig: Figure, path: Path) -> bytes:
    """Write the figure to `path` atomically; returns the PNG, for pages that embed it."""
    png = png_bytes(fig)
    atomic.write_bytes(path, png)
    return png


def confusion_matrices(labels: np.ndarray, predicted: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(counts, normalised) k×k matrices, rows actual, columns predicted; a normalised row is the
    share of that class's images given each label (its diagonal entry is the class's recall)."""
    from sklearn import metrics as skm  # here, not above: report draws its charts without it (1.2 s)

    index = list(range(k))
    counts = skm.confusion_matrix(labels, predicted, labels=index)
    return counts, skm.confusion_matrix(labels, predicted, labels=index, normalize="true")


def confusion_figure(labels: np.ndarray, predicted: np.ndarray, classes: tuple[str, ...], *, title: str) -> Figure:
    """Counts beside the row-normalised matrix, drawn by scikit-learn's ConfusionMatrixDisplay:
    800 × 400 px for two classes, wider with more (half an inch a class and a panel), the numbers
    smaller and the predicted names upright from five classes up. With more than
    MAX_CONFUSION_CLASSES classes, only the rows and columns of the MAX_CONFUSION_CLASSES classes
    most involved in mistakes (wrong as the actual class or as the prediction), each row still
    normalised over all its images; the whole matrix is in plots/confusion.csv."""
    from sklearn import metrics as skm

    k = len(classes)
    counts, shares = confusion_matrices(labels, predicted, k)
    shown = most_confused(counts, MAX_CONFUSION_CLASSES)
    counts, shares = counts[np.ix_(shown, shown)], shares[np.ix_(shown, shown)]
    names = [classes[i] for i in shown]
    n = len(shown)
    side = max(4.0, 0.5 * n + 1.5)  # inches per panel
    fig = Figure(figsize=(2 * side, side), layout="constrained")
    panels = zip((counts, shares), ("counts", "share of each actual class"), ("d", ".2f"))
    for ax, (matrix, name, fmt) in zip(fig.subplots(1, 2), panels):
        display = skm.ConfusionMatrixDisplay(matrix, display_labels=names)
        text = {} if n <= 4 else {"text_kw": {"fontsize": 7}}
        display.plot(
            ax=ax,
            colorbar=False,
            cmap="Blues",
            values_format=fmt,
            xticks_rotation="horizontal" if n <= 4 else "vertical",
            **text,
        )
        ax.set(title=name, xlabel="predicted", ylabel="actual")
    fig.suptitle(
        title
        if n == k
        else f"{title}\nthe {n} classes of {k} most involved in mistakes (all of them: plots/confusion.csv)"
    )
    return fig


def most_confused(counts: np.ndarray, limit: int) -> list[int]:
    """Every class index when there are at most `limit`; else the `limit` classes with the most
    mistakes as actual class plus as prediction (off-diagonal row + column sums), in class order."""
    k = len(counts)
    if k <= limit:
        return list(range(k))
    wrong = counts.sum(0) + counts.sum(1) - 2 * np.diag(counts)
    return sorted(np.argsort(-wrong, kind="stable")[:limit].tolist())


def most_wrong(labels: np.ndarray, proba: np.ndarray, limit: int = MAX_WRONG) -> np.ndarray:
    """Indices of the misclassified images, most confident first: by the probability the model gave
    the (wrong) class it predicted, ties in test-split order. At most `limit` of them."""
    predicted = proba.argmax(1)
    wrong = np.flatnonzero(predicted != labels)
    confidence = proba[wrong, predicted[wrong]]
    return wrong[np.argsort(-confidence, kind="stable")][:limit]


def most_wrong_figure(
    images: np.ndarray,
    labels: np.ndarray,
    proba: np.ndarray,
    indices: np.ndarray,
    classes: tuple[str, ...],
    *,
    title: str,
) -> Figure:
    """`images[indices]` ((N, C, S, S) uint8, RGB or grey) in rows of 4, each captioned with its index
    in the test split, its true class and the probability the model gave the wrong one.
    800 × (50 + 225 · rows) px."""
    pictures, captions = [], []
    for i in indices:
        wrong = int(proba[i].argmax())
        pictures.append(picture(images[i]))
        captions.append(f"#{i}: a {classes[labels[i]]}\nP({classes[wrong]}) = {proba[i, wrong]:.2f}")
    return picture_grid(pictures, captions, title=title, empty="no misclassified test images")


def picture(image: np.ndarray) -> np.ndarray:
    """A (C, S, S) uint8 image, RGB or grey, as the (S, S, 3) RGB picture matplotlib draws."""
    image = np.asarray(image)
    return np.ascontiguousarray(np.broadcast_to(image.transpose(1, 2, 0), (*image.shape[1:], 3)))


def picture_grid(pictures: list[np.ndarray], captions: list[str], *, title: str, empty: str = "") -> Figure:
    """(S, S, 3) uint8 pictures in rows of 4, each with its caption: 800 × (50 + 225 · rows) px."""
    rows = max(1, math.ceil(len(pictures) / GRID_COLUMNS))
    fig = Figure(figsize=(8, 0.5 + 2.25 * rows), layout="constrained")
    axes = fig.subplots(rows, GRID_COLUMNS, squeeze=False).ravel()
    for ax in axes:
        ax.set_axis_off()
    for ax, picture, caption in zip(axes, pictures, captions):
        ax.imshow(picture, interpolation="bilinear")
        ax.set_title(caption, fontsize=9)
    if not pictures and empty:
        axes[0].text(0, 0.5, empty, fontsize=12)
    fig.suptitle(title)
    return fig


def lr_find_figure(rates: list[float], losses: list[float], suggested: float, *, title: str) -> Figure:
    """The learning-rate range test: the smoothed training loss against the rate (log axis), the
    suggested rate marked. 700 × 450 px."""
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.subplots()
    ax.plot(rates, losses)
    ax.axvline(suggested, color="tab:red", linestyle="--", label=f"steepest descent: {suggested:.2g}")
    ax.set_xscale("log")
    ax.set(xlabel="learning rate (log scale)", ylabel="training loss (smoothed)", title=title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    return fig


def accuracy_vs_time_figure(rows: list[dict]) -> Figure:
    """Test accuracy with its 95% interval against training time, one labelled point per model.
    Time on a log axis: the zoo spans seconds (a frozen backbone) to hours."""
    fig = Figure(figsize=(8, 5), layout="constrained")
    ax = fig.subplots()
    for r in rows:
        x, y, (low, high) = r["train_seconds"], r["accuracy"], r["accuracy_ci95"]
        ax.errorbar([x], [y], yerr=[[y - low], [high - y]], fmt="o", capsize=4)
        ax.annotate(r["model"], (x, y), xytext=(6, 4), textcoords="offset points", fontsize=9)
    ax.set_xscale("log")
    ax.xaxis.set_minor_locator(LogLocator(subs=(2, 5)))
    seconds = FuncFormatter(lambda x, _: f"{x:g}")  # 20, 50, 100, not 2×10¹
    ax.xaxis.set_major_formatter(seconds)
    ax.xaxis.set_minor_formatter(seconds)
    ax.margins(x=0.15)  # room for the labels of the first and last model
    ax.set(
        xlabel="training time (s, log scale)",
        ylabel="test accuracy (95% CI)",
        title="Test accuracy against training time",
    )
    ax.grid(True, which="both", alpha=0.3)
    return fig


def learning_curve_figure(curves: dict[str, list[tuple[int, float, float, float]]]) -> Figure:
    """Test accuracy against training photos (log scale), one line per regime: `curves` maps a
    regime to (photos, mean accuracy, lowest, highest over the seeds), the bars the seeds' range."""
    fig = Figure(figsize=(8, 5), layout="constrained")
    ax = fig.subplots()
    for regime, points in curves.items():
        x, y, low, high = (list(column) for column in zip(*sorted(points)))
        ax.errorbar(
            x,
            y,
            yerr=[[m - lo for m, lo in zip(y, low)], [hi - m for m, hi in zip(y, high)]],
            marker="o",
            capsize=4,
            label=regime,
        )
    ax.set_xscale("log")
    photos = FuncFormatter(lambda x, _: f"{x:,.0f}")
    ax.xaxis.set_major_formatter(photos)
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda x, _: ""))
    ax.set(
        xlabel="training photos (log scale)",
        ylabel="test accuracy (mean over seeds; bars: their range)",
        title="What pretraining buys: accuracy against training photos",
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=9)
    return fig


# (panel title, y label, [(column of the epochs table, legend)])
CURVE_PANELS = (
    ("log loss", "log loss", (("train_loss", "train (augmented batches)"), ("val_loss", "validation"))),
    ("accuracy", "accuracy", (("train_accuracy", "train (augmented batches)"), ("val_accuracy", "validation"))),
    ("learning rate", "learning rate (end of epoch)", (("lr", None),)),
)


def curves_figure(curves: dict[str, tuple[list[int], list[float]]], *, title: str) -> Figure:
    """One model's per-epoch curves: log loss and accuracy (train and validation, both plain log loss:
    no label smoothing) and the learning rate at the end of each epoch. `curves` maps a column of
    the epochs table (`train_loss`, ..., `lr`) to (epochs from 1, values)."""
    fig = Figure(figsize=(12, 3.5), layout="constrained")
    for ax, (panel, ylabel, lines) in zip(fig.subplots(1, 3), CURVE_PANELS):
        for column, legend in lines:
            epochs, values = curves[column]
            ax.plot(epochs, values, marker="o", label=legend)  # a marker: 1 epoch is 1 point
        _epoch_axis(ax)
        ax.set(xlabel="epoch", ylabel=ylabel, title=panel)
        ax.grid(True, alpha=0.3)
        if len(lines) > 1:
            ax.legend()
    fig.suptitle(title)
    return fig


def _epoch_axis(ax) -> None:
    ax.xaxis.get_major_locator().set_params(integer=True)  # epochs 1, 2, 3, never 1.5


def models_figure(
    series: dict[str, tuple[list[float], list[float]]], *, title: str, xlabel: str, ylabel: str, epochs: bool = False
) -> Figure:
    """One line per model, the legend in the order given: `series` maps a model to (x, y)."""
    fig = Figure(figsize=(8, 5), layout="constrained")
    ax = fig.subplots()
    for name, (x, y) in series.items():
        ax.plot(x, y, marker="o" if epochs else None, label=name)
    if epochs:
        _epoch_axis(ax)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=9)
    return fig


def roc_figure(curves: dict[str, tuple[list[float], list[float]]], classes: tuple[str, ...]) -> Figure:
    """Every model's ROC curve on the test split (evaluate.roc_rows), with chance's diagonal."""
    which = (
        f"{classes[1]} the positive class"
        if len(classes) == 2
        else f"one-vs-rest, the macro average over {len(classes)} classes"
    )
    fig = models_figure(
        curves,
        title=f"ROC curves on the test split ({which})",
        xlabel="false positive rate",
        ylabel="true positive rate",
    )
    ax = fig.axes[0]
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1, label="chance")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), aspect="equal")
    ax.legend(fontsize=9, loc="lower right")
    return fig
