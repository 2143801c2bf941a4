"""Does dropout on the attention probabilities matter to the dynamics model, and does the Pallas
kernel that keeps it train like the explicit attention?

torch's ``TransformerEncoderLayer`` (the original's dynamics model) drops attention probabilities
too. Variants: ``torch`` (that dropout, explicit attention), ``fused`` (no attention dropout, so the
attention is one fused kernel: ``jax.nn.dot_product_attention``, cuDNN's flash attention on NVIDIA
GPUs, 1.64x in training on an H100) and ``pallas`` (that dropout inside this project's Pallas flash
kernel, ``kernels/flash_attention.py``; its masks come from a hash instead of ``jax.random``, the
layers' other dropout masks are the same as ``torch``'s; on CPUs the kernel runs interpreted).
Each is trained for several seeds, the other dropout equal, on

- ``toy``: the toy world's demonstrations (``dynaguide train dynamics --data toy``), evaluated on
  unseen episodes (another data seed);
- ``tabletop``: the built-in world's CALVIN-format play as ``dynaguide demo`` prepares it (its RLDS
  dataset and feature cache, the demo's dynamics model, steps, batch and learning rate; without its
  ``--noised`` augmentation, so the variants differ in the attention only), evaluated on the validation split,

and the script prints held-out future-patch MSE and behaviour-retrieval accuracy (``dynaguide eval
dynamics``) of each variant against ``torch``: means, seed spread, and the difference in units of that
spread and of its standard error (t; paired t over the per-seed differences).
Finished runs are kept (a rerun resumes, and adds variants or seeds); runs go to worker processes,
one per core.

    python benchmarks/attention_dropout.py --demo-dir runs/demo --out runs/attention_dropout
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

# variant -> (attention-probability dropout: None = the layer's dropout, attention kernel in training)
VARIANTS = {"torch": (None, "xla"), "fused": (0.0, "xla"), "pallas": (None, "pallas")}
METRICS = {"mse": "held-out future-patch MSE", "retrieval": "behaviour retrieval from the prediction"}


def _cli(argv: list[str]) -> None:
    from dynaguide_jax.cli import main

    if main([str(a) for a in argv]) != 0:
        raise RuntimeError(f"dynaguide {' '.join(map(str, argv))} failed")


def _demo_config(demo_dir: str):
    """The settings of the demo in ``demo_dir`` (its ``results.json``), else the small preset's."""
    from dynaguide_jax.demo.config import DemoConfig

    try:
        return DemoConfig.from_results(os.path.join(demo_dir, "results.json"))
    except FileNotFoundError:
        print(f"{demo_dir} has no results.json: assuming the small preset's settings (encoder, dynamics)")
        return DemoConfig.for_preset("small")


def _tabletop_sources(demo_dir: str, out_dir: str, log) -> tuple:
    """``(rlds, train features, validation features, DemoConfig)`` of a demo's RLDS and features
    stages; the validation split is encoded once into ``out_dir``, with the demo's encoder."""
    from dynaguide_jax.data.features import build_feature_cache
    from dynaguide_jax.data.rlds import FrameStream
    from dynaguide_jax.demo.pipeline import demo_encoder

    train, where = os.path.join(demo_dir, "features"), os.path.join(demo_dir, "rlds", "path.txt")
    for path in (where, os.path.join(train, "features.npy")):
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path} is missing: run `dynaguide demo --out-dir {demo_dir}` first "
                                    "(its rlds and features stages)")
    with open(where) as f:
        rlds = os.path.join(demo_dir, "rlds", f.read().strip())
    cfg = _demo_config(demo_dir)
    val = os.path.join(out_dir, "tabletop", "features_validation")
    if not os.path.exists(os.path.join(val, "features.npy")):
        log(f"encoding the validation split into {val}")
        enc, params, _ = demo_encoder(cfg)
        build_feature_cache(val, FrameStream(rlds, "validation", "observation/rgb_static"), enc, params,
                            cfg.encoder_size, progress=False)
    return rlds, train, val, cfg


def train_and_evaluate(dataset: str, variant: str, seed: int, run: str, args: dict, *, log) -> dict:
    """One run: train (resumes) and evaluate on held-out data; returns its ``eval_dynamics.json``."""
    report = os.path.join(run, "eval", "eval_dynamics.json")
    if not os.path.exists(report):
        common = ["--out", run, "--seed", seed, "--steps", args["steps"], "--dropout", args["dropout"], "--quiet"]
        rate, kernel = VARIANTS[variant]
        if rate is not None:
            common += ["--attention-dropout", rate]
        if kernel != "xla":
            common += ["--attention", kernel]
        if dataset == "toy":
            _cli(["train", "dynamics", "--data", "toy", "--episodes", args["episodes"], *common])
            _cli(["eval", "dynamics", "--run", run, "--data", "toy", "--episodes", max(4, args["episodes"] // 2),
                  "--quiet"])
        else:
            _cli(["train", "dynamics", "--data", "rlds", "--rlds", args["rlds"], "--features", args["train"],
                  "--model", args["model"], "--global-batch", args["batch"], "--learning-rate", args["lr"], *common])
            _cli(["eval", "dynamics", "--run", run, "--data", "rlds", "--rlds", args["rlds"], "--features",
                  args["val"], "--split", "validation", "--quiet"])
        log(f"{dataset} {variant} seed {seed}: done")
    with open(report) as f:
        return json.load(f)


def summarise(reports: dict) -> list[dict]:
    """Per dataset, metric and variant other than ``torch``: both variants' means and values, sd (the
    pooled seed spread), ``difference`` (variant - torch), ``t``: the difference over its standard error,
    and ``paired_t`` over the per-seed differences. Beyond seed noise (p < 0.05, two-sided) is |t| > 2.78
    at 3 seeds per variant (2.31 at 5), |paired t| > 4.30 at 3 seeds (2.78 at 5)."""
    rows = []
    for dataset, by_variant in reports.items():
        for metric in METRICS:
            base = np.array([_metric(r, metric) for r in by_variant["torch"]])
            for variant, runs in by_variant.items():
                if variant == "torch":
                    continue
                vals = np.array([_metric(r, metric) for r in runs])
                pooled = float(np.sqrt((base.var(ddof=1) + vals.var(ddof=1)) / 2)) if min(
                    len(base), len(vals)) > 1 else float("nan")
                diff = float(vals.mean() - base.mean())
                rows.append({"dataset": dataset, "metric": metric, "variant": variant, "seeds": len(base),
                             "torch_mean": float(base.mean()), "torch_values": base.tolist(),
                             "variant_mean": float(vals.mean()), "variant_values": vals.tolist(),
                             "seed_sd": pooled, "difference": diff,
                             "difference_in_sd": diff / pooled if pooled > 0 else float("nan"),
                             "t": diff / (pooled * np.sqrt(1 / len(base) + 1 / len(vals)))
                             if pooled > 0 else float("nan"), "paired_t": _paired_t(vals - base)})
    return rows


def _paired_t(d: np.ndarray) -> float:
    """Mean over standard error of per-seed differences (a seed fixes the initial weights and the batches
    of both variants: only the attention dropout masks differ)."""
    sd = d.std(ddof=1)
    return float(d.mean() / (sd / np.sqrt(len(d)))) if sd > 0 else float("nan")


def _metric(report: dict, metric: str) -> float:
    return report["mse"] if metric == "mse" else report["retrieval"].get("accuracy_prediction", float("nan"))


def format_table(rows: list[dict]) -> str:
    lines = ["| data | metric | seeds | variant | torch (explicit, attention dropout) | variant mean | seed sd "
             "| variant - torch | t, paired t |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        fmt = "{:.4f}" if r["metric"] == "mse" else "{:.1%}"
        lines.append(f"| {r['dataset']} | {METRICS[r['metric']]} | {r['seeds']} | {r['variant']} | "
                     f"{fmt.format(r['torch_mean'])} | {fmt.format(r['variant_mean'])} | {fmt.format(r['seed_sd'])} | "
                     f"{fmt.format(r['difference'])} ({r['difference_in_sd']:+.1f} sd) | "
                     f"{r['t']:+.1f}, {r['paired_t']:+.1f} |")
    return "\n".join(lines)


def plot(rows: list[dict], path: str) -> str:
    """One panel per dataset and metric: every variant's per-seed values and mean."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels: dict = {}
    for r in rows:
        panel = panels.setdefault((r["dataset"], r["metric"]), {"torch": r["torch_values"]})
        panel[r["variant"]] = r["variant_values"]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.2), squeeze=False)
    for ax, ((dataset, metric), values) in zip(axes[0], panels.items()):
        for i, (variant, ys) in enumerate(values.items()):
            ax.scatter(np.full(len(ys), i), ys, label=variant)
            ax.hlines(np.mean(ys), i - 0.25, i + 0.25, color="k")
        ax.set(xticks=range(len(values)), xticklabels=list(values), xlim=(-0.6, len(values) - 0.4),
               title=f"{dataset}: {metric}")
    fig.suptitle("attention dropout: explicit (torch), none (fused), in the Pallas kernel; one point per seed")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/attention_dropout")
    p.add_argument("--datasets", nargs="+", choices=["toy", "tabletop"], default=["toy", "tabletop"])
    p.add_argument("--demo-dir", default="runs/demo", help="a finished `dynaguide demo` output (tabletop data)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS),
                   help="torch (the baseline, always trained) and the variants compared with it")
    p.add_argument("--dropout", type=float, default=0.1, help="the layers' dropout (the paper model's 0.1)")
    p.add_argument("--toy-steps", type=int, default=1000)
    p.add_argument("--toy-episodes", type=int, default=64, help="training episodes (held out: half as many)")
    p.add_argument("--jobs", type=int, default=None, help="worker processes (default: one per core)")
    a = p.parse_args(argv)
    if len(set(a.seeds)) < 2 or len(set(a.seeds)) < len(a.seeds):
        p.error(f"--seeds needs at least two seeds, each once (the seed spread is the yardstick), got {a.seeds}")
    if a.jobs is not None and a.jobs < 1:
        p.error(f"--jobs must be >= 1, got {a.jobs}")
    variants = ["torch", *dict.fromkeys(v for v in a.variants if v != "torch")]
    if len(variants) < 2:
        p.error("--variants needs a variant to compare with torch (fused, pallas)")
    settings = {"dropout": a.dropout, "toy_steps": a.toy_steps, "toy_episodes": a.toy_episodes,
                "demo_dir": os.path.abspath(a.demo_dir)}
    recorded = os.path.join(a.out, "settings.json")
    if os.path.exists(recorded):
        with open(recorded) as f:
            before = json.load(f)
        changed = {k: (before.get(k), v) for k, v in settings.items()
                   if before.get(k) != v and (k != "demo_dir" or "tabletop" in a.datasets)}
        if changed:
            p.error(f"{a.out} holds runs made with other settings {changed} (before, now): use another --out")

    from dynaguide_jax.demo.parallel import Task, default_jobs, run_parallel, usable_jobs

    tasks, keys = {}, []
    for dataset in a.datasets:
        args = {"steps": a.toy_steps, "dropout": a.dropout, "episodes": a.toy_episodes}
        if dataset == "tabletop":
            try:
                rlds, train, val, cfg = _tabletop_sources(a.demo_dir, a.out, print)
            except FileNotFoundError as e:
                p.error(str(e))
            args = {"steps": cfg.dynamics_steps, "dropout": a.dropout, "rlds": rlds, "train": train, "val": val,
                    "batch": cfg.dynamics_batch, "lr": cfg.dynamics_lr, "model": cfg.dynamics_model}
        for variant in variants:
            for seed in a.seeds:
                name = f"{dataset}/{variant}-seed{seed}"
                cost = (3.0 if dataset == "tabletop" else 1.0) * (2.0 if variant == "pallas" else 1.0)
                tasks[name] = Task(train_and_evaluate, (dataset, variant, seed, os.path.join(a.out, name), args),
                                   cost=cost)
                keys.append((dataset, variant, name))
    os.makedirs(a.out, exist_ok=True)
    with open(recorded, "w") as f:
        json.dump(settings, f, indent=2)
    jobs = usable_jobs(a.jobs or default_jobs())
    if jobs > 1:
        results = run_parallel(tasks, jobs, log=print)
    else:  # one process: the runs share its compiled programs
        results = {name: t.fn(*t.args, log=print) for name, t in tasks.items()}
    reports = {}
    for dataset, variant, name in keys:
        reports.setdefault(dataset, {}).setdefault(variant, []).append(results[name])
    rows = summarise(reports)
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "summary.json"), "w") as f:
        json.dump({"dropout": a.dropout, "seeds": a.seeds, "variants": variants, "rows": rows}, f, indent=2)
    print(format_table(rows))
    print(f"wrote {os.path.join(a.out, 'summary.json')}, {plot(rows, os.path.join(a.out, 'summary.png'))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
