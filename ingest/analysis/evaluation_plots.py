"""PNG plots of the fidelity checks (`ingest/analysis/evaluate.py` results), in the style of the paper's
figures 4 (optimality), 5 (fidelity), 6 (correlation) and table 5 (k-stability). Matplotlib's Agg
backend: no display needed."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def optimality_plot(result: dict) -> bytes:
    """Fig. 4: mean L(random) − L(core) per layer with its 99 % interval; label: share of random
    sets that beat the core set."""
    layers = list(result)
    means = [result[n]["difference"]["mean"] for n in layers]
    low = [result[n]["difference"]["mean"] - result[n]["difference"]["ci_low"] for n in layers]
    high = [result[n]["difference"]["ci_high"] - result[n]["difference"]["mean"] for n in layers]
    fig, ax = plt.subplots(figsize=(1.4 + 1.1 * len(layers), 3.4))
    ax.bar(layers, means, yerr=[low, high], capsize=4, color="#4c72b0")
    for i, n in enumerate(layers):
        ax.annotate(
            f"{result[n]['random_better']:.0%} beat", (i, means[i]), ha="center", va="bottom", fontsize=8
        )
    ax.axhline(0, color="black", lw=0.8)
    ax.set_ylabel("loss: random − core (99 % CI)")
    ax.set_title("(a) optimality of the core sets")
    return _png(fig)


def fidelity_plot(result: dict, scope: str = "single") -> bytes:
    """Fig. 5: accuracy relative to the unmasked model, core vs random, masking and retaining, per
    layer, one panel per τ (on the class's own images)."""
    taus = list(result["by_tau"])
    fig, axes = plt.subplots(1, len(taus), figsize=(3.6 * len(taus), 3.3), squeeze=False, sharey=True)
    for ax, tau in zip(axes[0], taus, strict=True):
        per_layer = result["by_tau"][tau]
        layers = list(per_layer)
        for op, style in (("mask", "-"), ("retain", "--")):
            key = f"{scope}/{op}/class"
            ax.plot(
                layers,
                [per_layer[n][key]["core"] for n in layers],
                style,
                marker="o",
                color="#c44e52",
                label=f"{op} core",
            )
            ax.plot(
                layers,
                [per_layer[n][key]["random"] for n in layers],
                style,
                marker="s",
                color="#8c8c8c",
                label=f"{op} random",
            )
        ax.set_title(f"τ = {tau} ({scope} layer)")
        ax.set_ylim(-0.05, 1.15)
    axes[0][0].set_ylabel("relative accuracy (class images)")
    axes[0][-1].legend(fontsize=7, loc="lower left")
    fig.suptitle("(b) fidelity: masking / retaining core concept neurons")
    return _png(fig)


def correlation_plot(result: dict) -> bytes:
    """Fig. 6: Pearson correlation of Σ|T| with the concept change, by random-set size, per layer."""
    fig, ax = plt.subplots(figsize=(4.6, 3.3))
    for layer, entry in result.items():
        sizes = [s for s, v in entry["by_size"].items() if v["pearson"] is not None]
        ax.plot(
            [int(s) for s in sizes], [entry["by_size"][s]["pearson"] for s in sizes], marker="o", label=layer
        )
    ax.axhline(0.5, color="#8c8c8c", ls=":", lw=1)
    ax.set_xlabel("neurons knocked out (random sets)")
    ax.set_ylabel("Pearson r")
    ax.set_title("(c) importance vs concept change")
    ax.legend(fontsize=7)
    return _png(fig)


def stability_plot(result: dict) -> bytes:
    """Table 5 as a heat map: |S_a(k) ∩ S_a(50)| out of τ per layer and k."""
    layers = list(result)
    ks = sorted({int(k) for n in layers for k in result[n]["overlap"]})
    grid = [[result[n]["overlap"].get(str(k), float("nan")) for k in ks] for n in layers]
    fig, ax = plt.subplots(figsize=(1.2 + 0.75 * len(ks), 0.9 + 0.5 * len(layers)))
    tau = max(result[n]["tau"] for n in layers)
    ax.imshow(grid, vmin=0, vmax=tau, cmap="viridis", aspect="auto")
    for i, row in enumerate(grid):
        for j, v in enumerate(row):
            ax.text(j, i, f"{v:.1f}", ha="center", va="center", color="white", fontsize=8)
    ax.set_xticks(range(len(ks)), [str(k) for k in ks])
    ax.set_yticks(range(len(layers)), layers)
    ax.set_xlabel("k")
    ax.set_title(f"(d) overlap with k = 50 (out of τ = {tau})")
    return _png(fig)


PLOTS = {
    "optimality": optimality_plot,
    "fidelity": fidelity_plot,
    "correlation": correlation_plot,
    "k_stability": stability_plot,
}


def evaluation_plots(evaluation: dict) -> dict[str, bytes]:
    """One PNG per check present in `evaluation` (keys as in `PLOTS`)."""
    return {name: draw(evaluation[name]) for name, draw in PLOTS.items() if evaluation.get(name)}
