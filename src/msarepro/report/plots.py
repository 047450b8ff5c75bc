"""Learning curves per dataset: validation loss per epoch, mean over seeds, one line per method."""
from __future__ import annotations

from pathlib import Path

import pandas as pd


def learning_curves(curves: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Write <out_dir>/curves_<dataset>.png (atomically, deterministic bytes); -> the paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..io import atomic_path

    written = []
    for d, g in sorted(curves.groupby("dataset")) if not curves.empty else []:
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.2), sharex=True)
        for m, gm in sorted(g.groupby("method")):
            mean = gm.groupby("epoch")[["train_loss", "valid_loss"]].mean()
            axes[0].plot(mean.index, mean["train_loss"], label=m)
            axes[1].plot(mean.index, mean["valid_loss"], label=m)
        axes[0].set_title(f"{d}: train loss (sum of terms)")
        axes[1].set_title(f"{d}: validation task loss")
        for ax in axes:
            ax.set_xlabel("epoch")
            ax.grid(alpha=0.3)
        axes[1].legend(fontsize=7)
        fig.tight_layout()
        path = Path(out_dir) / f"curves_{d}.png"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=100, metadata={"Software": None})
        plt.close(fig)
        written.append(path)
    return written
