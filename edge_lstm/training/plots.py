"""Training-curve PNGs (loss and accuracy per epoch) from a fit history."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge_lstm.plotting import pyplot, save_figure


def plot_history(history: list[dict], path: Path, title: str = "training") -> Path:
    """Two panels, loss and accuracy, train vs validation, the best epoch marked; returns path."""
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for split in ("train", "val"):
        ax_loss.plot(epochs, [h[f"{split}_loss"] for h in history], marker="o", label=split)
        ax_acc.plot(epochs, [h[f"{split}_acc"] for h in history], marker="o", label=split)
    ax_loss.set(xlabel="epoch", ylabel="loss", title=f"{title}: loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title=f"{title}: accuracy", ylim=(0, 1.02))
    val_loss = np.array([h["val_loss"] for h in history], dtype=float)
    if np.isfinite(val_loss).any():
        best = epochs[int(np.nanargmin(val_loss))]
        for ax in (ax_loss, ax_acc):
            ax.axvline(best, color="grey", linestyle="--", linewidth=1, label=f"best ({best})")
    for ax in (ax_loss, ax_acc):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend()
    return save_figure(fig, path, dpi=110)
