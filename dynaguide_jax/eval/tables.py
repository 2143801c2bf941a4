"""Result tables of closed-loop experiments: success rates with 95% Wilson intervals, behaviour
distributions, ``results.json`` / ``table.md`` / ``table.csv``, a bar plot and rollout GIFs.

``results.json`` has the shape scripts rely on::

    {"experiment": str, "preset": str, "targets": [behaviour, ...],
     "methods": {method: {"mean_success": float,
                          "per_target": {behaviour: {"success": float, "n": int, "ci95": [lo, hi],
                                                     "distribution": {behaviour: float}}}}},
     "config": {...}}
"""
from __future__ import annotations

import csv
import json
import math
import os

import numpy as np


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval of a binomial proportion (``(0, 1)`` when ``n == 0``)."""
    if not all(isinstance(v, (int, np.integer)) for v in (successes, n)):
        raise TypeError(f"successes and n must be integers, got {successes!r} and {n!r}")
    if n < 0 or not 0 <= successes <= max(n, 0):
        raise ValueError(f"need 0 <= successes <= n, got {successes} of {n}")
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def summarize(detected: dict, targets, behaviour_names, *, experiment: str, preset: str, config: dict,
              success: dict | None = None) -> dict:
    """``detected {method: {target: [n] behaviour indices}}`` (indices into ``behaviour_names``) ->
    the ``results.json`` dict; success = the detected behaviour is the target, or, with ``success
    {target: [behaviour, ...]}``, one of the target's behaviours (targets are then any names, e.g. the
    multi-objective runs'; each target's entry records its ``"success_behaviours"``)."""
    names = list(behaviour_names)
    if isinstance(targets, str) or not len(targets):
        raise ValueError(f"targets must be a non-empty list of behaviour names, got {targets!r}")
    if success is None:
        unknown = [t for t in targets if t not in names]
        if unknown:
            raise ValueError(f"targets {unknown} are not behaviours ({names}); pass success= for other targets")
        success = {t: (t,) for t in targets}
    else:
        lacking = [t for t in targets if not success.get(t)]
        if lacking:
            raise ValueError(f"success names no behaviours for targets {lacking}")
        unknown = sorted({b for t in targets for b in success[t] if b not in names})
        if unknown:
            raise ValueError(f"success behaviours {unknown} are not behaviours ({names})")
    if not isinstance(detected, dict) or not detected:
        raise ValueError("detected must be a non-empty dict {method: {target: behaviour indices}}")
    methods = {}
    for method, per in detected.items():
        if not isinstance(per, dict):
            raise TypeError(f"detected[{method!r}] must be a dict {{target: behaviour indices}}, got "
                            f"{type(per).__name__}")
        rows = {}
        for target in targets:
            if target not in per:
                raise KeyError(f"method {method!r} has no rollouts for target {target!r}")
            idx = np.asarray(per[target]).reshape(-1)
            if idx.size and (idx.dtype.kind not in "iu" or idx.min() < 0 or idx.max() >= len(names)):
                raise ValueError(f"detected[{method!r}][{target!r}] must hold integer indices in [0, {len(names)}) "
                                 f"(into behaviour_names), got {idx.dtype} values {idx[:5].tolist()}")
            wanted = [names.index(b) for b in success[target]]
            n, hits = int(idx.size), int(np.isin(idx, wanted).sum())
            counts = np.bincount(idx, minlength=len(names)) if n else np.zeros(len(names), int)
            rows[target] = {"success": hits / n if n else 0.0, "n": n, "ci95": list(wilson_interval(hits, n)),
                            "distribution": {b: float(c / n) if n else 0.0 for b, c in zip(names, counts)}}
            if tuple(success[target]) != (target,):
                rows[target]["success_behaviours"] = list(success[target])
        methods[method] = {"mean_success": float(np.mean([r["success"] for r in rows.values()])), "per_target": rows}
    return {"experiment": experiment, "preset": preset, "targets": list(targets), "methods": methods,
            "config": config}


def format_markdown(results: dict) -> str:
    methods = list(results["methods"])
    head = "| target | " + " | ".join(methods) + " |"
    lines = [head, "| --- |" + " --- |" * len(methods)]
    for t in results["targets"]:
        cells = []
        for m in methods:
            r = results["methods"][m]["per_target"][t]
            lo, hi = r["ci95"]
            cells.append(f"{r['success']:.0%} [{lo:.0%}, {hi:.0%}] (n={r['n']})")
        lines.append(f"| {t} | " + " | ".join(cells) + " |")
    lines.append("| **mean** | " + " | ".join(f"**{results['methods'][m]['mean_success']:.0%}**" for m in methods)
                 + " |")
    return "\n".join(lines)


def write_results(results: dict, out_dir: str) -> list[str]:
    """``results.json``, ``table.md`` (success with 95% CI) and ``table.csv`` (one row per method,
    target and detected behaviour) in ``out_dir``; returns the paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = [os.path.join(out_dir, n) for n in ("results.json", "table.md", "table.csv")]
    with open(paths[0], "w") as f:
        json.dump(results, f, indent=2)
    with open(paths[1], "w") as f:
        f.write(f"# {results['experiment']} ({results['preset']} preset)\n\nsuccess rate [95% Wilson interval] "
                f"(rollouts)\n\n{format_markdown(results)}\n")
    with open(paths[2], "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["method", "target", "success", "n", "ci95_lo", "ci95_hi", "behaviour", "fraction"])
        for m, res in results["methods"].items():
            for t, r in res["per_target"].items():
                for b, frac in r["distribution"].items():
                    w.writerow([m, t, r["success"], r["n"], *r["ci95"], b, frac])
    return paths


def bar_plot(results: dict, path: str) -> str:
    """Grouped bars: success per target and method, with the 95% intervals as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    targets, methods = results["targets"], list(results["methods"])
    width = 0.8 / max(len(methods), 1)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(targets) + 2), 4.0))
    x = np.arange(len(targets))
    for i, m in enumerate(methods):
        rows = [results["methods"][m]["per_target"][t] for t in targets]
        s = np.array([r["success"] for r in rows])
        err = np.clip(np.array([[s[j] - r["ci95"][0], r["ci95"][1] - s[j]] for j, r in enumerate(rows)]).T, 0, None)
        ax.bar(x + (i - (len(methods) - 1) / 2) * width, s, width, yerr=err, capsize=2,
               label=f"{m} ({results['methods'][m]['mean_success']:.0%})")
    ax.set_xticks(x)
    ax.set_xticklabels(targets, rotation=30, ha="right")
    ax.set(ylim=(0, 1.05), ylabel="success rate", title=f"{results['experiment']} ({results['preset']})")
    ax.legend(fontsize=8, ncol=min(len(methods), 5))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def save_gif(frames, path: str, fps: int = 10) -> str:
    """``frames [T, H, W, 3]`` uint8 -> an animated GIF."""
    from PIL import Image

    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
        raise ValueError(f"frames must be a non-empty uint8 [T, H, W, 3] array, got {frames.dtype} {frames.shape}")
    images = [Image.fromarray(f) for f in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
    return path
