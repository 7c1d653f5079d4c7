"""docs/float32_error.png: how much float32 changes a CartPole estimate, against the estimate's own noise.

The setting of tests/test_float32.py (CartPole at the default θ, M = 64 batches of N = 32 episodes from one float32
rollout, REINFORCE with the leave-one-out baseline, each batch estimated in float32 and in float64). Per coordinate
of θ: the largest |ĝ32 − ĝ64| over the batches and the derived first-order bound (`float32_error_bound`), both
divided by σ, the standard deviation of one estimate's coordinate. Run: `.venv/bin/python docs/float32_error.py`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.test_float32 import MAX_ERROR_OVER_SE, float32_and_float64  # noqa: E402


def main() -> Path:
    torch.set_num_threads(1)
    _, _, batch, single, double, bound = float32_and_float64()
    sd = double.std(0)
    frame = pd.concat([
        pd.DataFrame({"coordinate": range(len(sd)), "ratio": ((single - double).abs().amax(0) / sd).numpy(),
                      "what": "measured |ĝ32 − ĝ64| (max over batches)"}),
        pd.DataFrame({"coordinate": range(len(sd)), "ratio": (bound.amax(0) / sd).numpy(),
                      "what": "derived bound (max over batches)"}),
    ])
    sns.set_theme(style="whitegrid")
    fig, ax = plt.subplots(figsize=(8, 4.5))
    sns.histplot(frame, x="ratio", hue="what", log_scale=True, bins=60, element="step", ax=ax)
    ax.axvline(MAX_ERROR_OVER_SE, color="black", linestyle="--", linewidth=1)
    ax.text(MAX_ERROR_OVER_SE, ax.get_ylim()[1] * 0.5, " asserted limit\n of the measured error", fontsize=9)
    sns.move_legend(ax, "upper right", title=None, fontsize=9)
    ax.set_xlabel("float32 − float64 difference / standard deviation of one estimate (per coordinate of θ)")
    ax.set_ylabel("coordinates of θ (4 610)")
    ax.set_title(f"CartPole, REINFORCE rloo, {batch.reps} batches × {batch.batch_size} episodes "
                 f"({batch.env_steps} steps), same trajectories", fontsize=10)
    out = ROOT / "docs" / "float32_error.png"
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    return out


if __name__ == "__main__":
    print(main())
