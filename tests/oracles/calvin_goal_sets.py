"""Oracle: goal-set selection of MaxDu17/DynaGuide ``data_processing_calvin/
split_behavioral_validation_datasets_calvin.py`` then ``hdf5_combiner.py``, line by line.

Differences: demos are ``(name, attrs)`` pairs in segment order instead of HDF5 groups (h5py would
list ``demo_10`` before ``demo_2``; the order only decides which draw a demo gets); the module-level
``random`` is one ``random.Random(seed)`` shared by both scripts; the combiner reads the behaviour
files in sorted name order, and an empty or one-demo file draws nothing from ``random.shuffle``.
Videos, copies and stats files are dropped.
"""
import random as _random

relevant_behaviors = ["button_on", "button_off", "switch_on", "switch_off", "drawer_open", "drawer_close",
                      "door_left", "door_right", "red_lift", "blue_lift", "pink_lift", "other"]


def goal_sets(demos, seed, accept_cap=20):
    """``{behavior: [demo names in combined order]}`` and the per-behaviour goal-set counts."""
    random = _random.Random(seed)
    # split_behavioral_validation_datasets_calvin.py
    relevant_behaviors_count = {k: 0 for k in relevant_behaviors}
    relevant_behaviors_test_count = {k: 0 for k in relevant_behaviors}
    relevant_behavior_datasets = {k: [] for k in relevant_behaviors}
    test_set = []
    for demo, attrs in demos:
        if "behavior" not in attrs:
            continue
        behavior = attrs["behavior"]
        if behavior not in relevant_behaviors:
            continue
        if random.random() > 0.3:
            relevant_behavior_datasets[behavior].append(demo)
            relevant_behaviors_count[behavior] += 1
        else:
            test_set.append(demo)
            relevant_behaviors_test_count[behavior] += 1
    # hdf5_combiner.py, sets_to_combine = every behaviour file
    combined = {}
    for datafile in sorted(relevant_behaviors):
        current_count = 0
        data_names = list(relevant_behavior_datasets[datafile])
        random.shuffle(data_names)
        combined[datafile] = []
        for demo in data_names:
            combined[datafile].append(demo)
            current_count += 1
            if accept_cap is not None and current_count >= accept_cap:
                break
    return combined, relevant_behaviors_count
