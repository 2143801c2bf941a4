"""Which labelled segments become goals, as the original chooses them.

``split_behavioral_validation_datasets_calvin.py`` drops behaviours outside its list (the
``*_displace`` ones) and sends each remaining demo to the goal set when ``random.random() > 0.3``;
``hdf5_combiner.py`` then shuffles each behaviour's demos and takes at most 20. One
``random.Random(seed)`` makes both draws here: one per eligible segment in segment order, then one
shuffle per behaviour in sorted name order.
"""
from __future__ import annotations

import random


def select_goal_segments(labels: dict[int, str], seed: int = 0, keep_fraction: float = 0.7,
                         max_per_behaviour: int | None = 20) -> tuple[dict[str, list[int]], dict]:
    """``labels``: segment id -> behaviour ("" = unlabelled). Returns ``({behaviour: [segment ids in
    goal order]}, counts)``; counts has ``available / kept / capped / written`` per behaviour, the
    dropped ``*_displace`` segments per behaviour and the number of unlabelled segments."""
    if not isinstance(labels, dict) or any(not isinstance(v, str) for v in labels.values()):
        raise TypeError("labels must be a dict {segment id: behaviour name ('' = unlabelled)}")
    if not 0.0 <= keep_fraction <= 1.0:
        raise ValueError(f"keep_fraction must be in [0, 1], got {keep_fraction}")
    if max_per_behaviour is not None and max_per_behaviour < 1:
        raise ValueError(f"max_per_behaviour must be >= 1 (or None: no cap), got {max_per_behaviour}")
    rng = random.Random(seed)
    kept: dict[str, list[int]] = {}
    available: dict[str, int] = {}
    dropped: dict[str, int] = {}
    unlabelled = 0
    for s in sorted(labels):
        name = labels[s]
        if not name:
            unlabelled += 1
        elif name.endswith("_displace"):
            dropped[name] = dropped.get(name, 0) + 1
        else:
            available[name] = available.get(name, 0) + 1
            kept.setdefault(name, [])
            if rng.random() > round(1.0 - keep_fraction, 12):  # the original: random.random() > 0.3
                kept[name].append(s)
    chosen, stats = {}, {}
    for name in sorted(kept):
        rng.shuffle(kept[name])
        chosen[name] = kept[name][:max_per_behaviour]
        stats[name] = {"available": available[name], "kept": len(kept[name]),
                       "capped": len(kept[name]) - len(chosen[name]), "written": len(chosen[name])}
    counts = {"seed": seed, "keep_fraction": keep_fraction, "max_per_behaviour": max_per_behaviour,
              "behaviours": stats, "dropped": dict(sorted(dropped.items())), "unlabelled_segments": unlabelled}
    return chosen, counts
