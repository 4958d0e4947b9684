"""Training curves as PNG (matplotlib, headless Agg backend)."""
from __future__ import annotations

from pathlib import Path


def plot_sft_curves(rows: list[dict], path: str | Path, best: dict[str, dict] | None = None) -> Path:
    """Stage-1 curves from metrics rows: losses (train/val, both objectives), BC token accuracy,
    steps-to-go error; vertical lines at the selected policy / reward-model steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    step = [r["step"] for r in rows]
    fig, ax = plt.subplots(1, 3, figsize=(14, 3.8))
    ax[0].plot(step, [r["train_bc_loss"] for r in rows], "C0--", label="train BC")
    ax[0].plot(step, [r["val_bc_loss"] for r in rows], "C0-", label="val BC")
    ax[0].plot(step, [r["train_stg_loss"] for r in rows], "C1--", label="train steps-to-go")
    ax[0].plot(step, [r["val_stg_loss"] for r in rows], "C1-", label="val steps-to-go")
    ax[0].set_title("loss (NLL)")
    ax[1].plot(step, [r["val_token_acc"] for r in rows], "C0-")
    ax[1].set_title("val BC token accuracy")
    ax[2].plot(step, [r["val_d_mae"] for r in rows], "C1-", label="|d - (T - t)|")
    ax[2].plot(step, [r["val_d_goal"] for r in rows], "C2-", label="d at goal frames")
    ax[2].set_title("val steps-to-go error (steps)")
    for a in ax:
        a.set_xlabel("step")
        a.grid(alpha=0.3)
        for key, color in (("val_bc_loss", "C0"), ("val_stg_loss", "C1")):
            if best and key in best:
                a.axvline(best[key]["step"], color=color, ls=":", lw=1)
    ax[0].legend(fontsize=8)
    ax[2].legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
