"""Tables and figures of an experiment's results (``results.json`` as ``eval.tables.summarize`` makes it).

- ``bars``: success per target and method with 95 % Wilson intervals (ArticulatedParts, MovableObjects,
  UnderspecifiedObjectives; the original's Exp1/Exp2 bar charts), plus the per-object view the paper
  shows (``object_means``: each object's two directions averaged, experiment_1_graphs.py's collapse);
- ``objects``: the multi-objective stacks of experiment_4_multiobjective.py per target and method:
  success (a wanted object first), another object first, nothing;
- ``fraction``: success against the percentage of the reduced behaviour's data
  (experiment_5_deprivation_graphs.py), one line per method with its interval band.
"""
from __future__ import annotations

import os

import numpy as np

from dynaguide_jax.eval.tables import bar_plot

NOTHING = "no_behavior"


def object_means(results: dict) -> dict:
    """``{method: {object: mean success}}`` over the targets of each object (``door_left``/``door_right``
    -> ``door``), the paper's collapsed ArticulatedParts figure."""
    out = {}
    for m, res in results["methods"].items():
        groups: dict[str, list[float]] = {}
        for t, r in res["per_target"].items():
            groups.setdefault(t.split("_")[0], []).append(r["success"])
        out[m] = {g: float(np.mean(v)) for g, v in groups.items()}
    return out


def outcome_split(row: dict) -> tuple[float, float, float]:
    """``(success, other behaviour, nothing)`` fractions of one per-target row."""
    nothing = row["distribution"].get(NOTHING, 0.0)
    return row["success"], max(0.0, 1.0 - row["success"] - nothing), nothing


def objects_plot(results: dict, path: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    targets, methods = results["targets"], list(results["methods"])
    width = 0.8 / len(methods)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.5 * len(targets) + 3), 4.2))
    x = np.arange(len(targets))
    colours = ("#B4DCB5", "#FAA41C", "#C8525D")  # experiment_4_multiobjective.py's green / orange / red
    for i, m in enumerate(methods):
        parts = np.array([outcome_split(results["methods"][m]["per_target"][t]) for t in targets])
        pos = x + (i - (len(methods) - 1) / 2) * width
        bottom = np.zeros(len(targets))
        for j, (label, colour) in enumerate(zip(("success", "other object", "nothing"), colours)):
            ax.bar(pos, parts[:, j], width * 0.95, bottom=bottom, color=colour, edgecolor="black", linewidth=0.4,
                   label=label if i == 0 else None, alpha=1.0 if j != 1 else 0.6)
            bottom += parts[:, j]
        for p in pos:
            ax.text(p, 1.01, m, ha="center", va="bottom", fontsize=7, rotation=90)
    ax.set_xticks(x)
    ax.set_xticklabels([t.replace("_", " ") for t in targets], rotation=25, ha="right", fontsize=8)
    ax.set(ylim=(0, 1.25), ylabel="fraction of rollouts", title=f"{results['experiment']} ({results['preset']})")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))  # outside: the bars' labels stay clear
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def fraction_plot(results: dict, fractions: dict, path: str) -> str:
    """``fractions {target: percent of the reduced behaviour's data}``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    targets = sorted(results["targets"], key=lambda t: fractions[t])
    x = np.array([fractions[t] for t in targets])
    fig, ax = plt.subplots(figsize=(5, 4))
    for m, res in results["methods"].items():
        rows = [res["per_target"][t] for t in targets]
        y = np.array([r["success"] for r in rows])
        lo, hi = np.array([r["ci95"][0] for r in rows]), np.array([r["ci95"][1] for r in rows])
        ax.plot(x, y, "o-", label=m)
        ax.fill_between(x, lo, hi, alpha=0.15)
    ax.set(xlabel="% of the target behaviour's data kept", ylabel="success rate", ylim=(0, 1),
           title=f"{results['experiment']} ({results['preset']})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def figure(results: dict, kind: str, out_dir: str, fractions: dict | None = None) -> list[str]:
    """The experiment's figure(s) as PNG in ``out_dir``."""
    if kind == "objects":
        return [objects_plot(results, os.path.join(out_dir, "objectives.png"))]
    if kind == "fraction":
        return [fraction_plot(results, fractions, os.path.join(out_dir, "success_vs_data.png"))]
    return [bar_plot(results, os.path.join(out_dir, "success.png"))]


def format_objects(results: dict) -> str:
    """Markdown of the success / other / nothing split per target and method."""
    methods = list(results["methods"])
    lines = ["| target | " + " | ".join(f"{m}: success / other / nothing" for m in methods) + " |",
             "| --- |" + " --- |" * len(methods)]
    for t in results["targets"]:
        cells = ["{:.0%} / {:.0%} / {:.0%}".format(*outcome_split(results["methods"][m]["per_target"][t]))
                 for m in methods]
        lines.append(f"| {t} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_object_means(results: dict) -> str:
    means = object_means(results)
    methods = list(means)
    objects = list(next(iter(means.values())))
    lines = ["| object | " + " | ".join(methods) + " |", "| --- |" + " --- |" * len(methods)]
    for o in objects:
        lines.append(f"| {o} | " + " | ".join(f"{means[m][o]:.0%}" for m in methods) + " |")
    return "\n".join(lines)
