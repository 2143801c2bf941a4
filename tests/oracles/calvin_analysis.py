"""Oracle: the original's CALVIN behaviour analysis, reset states and termination rule, MaxDu17/DynaGuide
``analyze_calvin_touch.py`` (``segment_states``, ``generate_detailed_behavior_distribtuion``),
``core/calvin_utils.py`` (``generate_reset_state``, ``articulated_binaries_from_start_state``,
``check_state_difference``) and the rollout loop of ``run_dynaguide.py`` (``rollout``), followed
line by line.

Differences, none of which change a count, a label, a reset value or a termination step:
the demos come as a list of ``(states, proprio)`` arrays instead of an HDF5 file's ``data`` group
(demo keys ``demo_0``, ``demo_1``, ... as the original writes them); plots, JSON writes and tqdm
are dropped; ``segment_states`` leaves out the block rotation matrices (never read by the
detection, and scipy's euler conversion is not needed); ``generate_reset_state`` takes its
``random.Random`` instead of the module-global one; ``check_state_difference`` keeps only the
``for_display=False`` branch the rollouts use; the rollout loop is reduced to the observations it
records and where it breaks (policy, video, env stepping and ``success`` dropped: the scene/robot
observations come precomputed, one per step).

The oracle keeps the original's bug: a ``button_on`` demo is labelled ``"button_off"`` in
``demo_labels`` (its count goes to ``button_on``).
"""
import numpy as np


def segment_states(state_obs):
    return {"sliding_door": state_obs[0],
            "drawer": state_obs[1],
            "button": state_obs[2],
            "switch": state_obs[3],
            "lightbulb": state_obs[4],
            "green_light": state_obs[5],
            "red_block": state_obs[6:9],
            "blue_block": state_obs[12: 15],
            "pink_block": state_obs[18:21]}


def generate_detailed_behavior_distribtuion(demos):
    """``demos``: list of ``(states [T, 24] or [T, F, 24], proprio [T, 15] or [T, F, 15])``."""
    relevant_behaviors = ["button_on", "button_off", "switch_on", "switch_off", "drawer_open", "drawer_close",
                          "door_left", "door_right", "red_displace", "blue_displace", "pink_displace", "no_behavior"]
    behavior_dict = {k: 0 for k in relevant_behaviors}
    adjustable_limits = {"sliding_door": [0, 0.27], "drawer": [0, 0.16], "switch": [0, 0.08], "green_light": [0, 1]}
    half_thresholds = {k: (v[1] - v[0]) / 2 for k, v in adjustable_limits.items()}  # noqa: F841 (unused, as there)

    data_grp = {f"demo_{i}": {"obs": {"proprio": p, "states": s}} for i, (s, p) in enumerate(demos)}
    steps_list = list()

    demo_labels = {}
    for demo in data_grp.keys():

        positions = data_grp[demo]["obs"]["proprio"]
        env_states = data_grp[demo]["obs"]["states"]
        if len(env_states.shape) == 3:
            env_states = env_states[:, -1]
        if len(positions.shape) == 3:
            positions = positions[:, -1]

        first_state = segment_states(env_states[0])
        something_happened = False
        for step in range(env_states.shape[0]):
            last_state = segment_states(env_states[step])

            delta_state = {k: np.linalg.norm(last_state[k] - first_state[k]) for k in last_state.keys()}
            robot_pos = positions[step, 0:3]
            if np.linalg.norm(robot_pos - last_state["red_block"]) < 0.1 and delta_state["red_block"] > 0.001:
                behavior_dict["red_displace"] += 1
                something_happened = True
                demo_labels[demo] = "red_displace"

            if np.linalg.norm(robot_pos - last_state["pink_block"]) < 0.1 and delta_state["pink_block"] > 0.001:
                behavior_dict["pink_displace"] += 1
                something_happened = True
                demo_labels[demo] = "pink_displace"

            if np.linalg.norm(robot_pos - last_state["blue_block"]) < 0.1 and delta_state["blue_block"] > 0.001:
                behavior_dict["blue_displace"] += 1
                something_happened = True
                demo_labels[demo] = "blue_displace"

            if something_happened:
                break

            if delta_state["sliding_door"] > 0.05:
                if first_state["sliding_door"] < last_state["sliding_door"]:
                    behavior_dict["door_left"] += 1
                    demo_labels[demo] = "door_left"

                else:
                    behavior_dict["door_right"] += 1
                    demo_labels[demo] = "door_right"

                something_happened = True

                break
            elif delta_state["drawer"] > 0.05:
                if first_state["drawer"] > last_state["drawer"]:
                    behavior_dict["drawer_close"] += 1
                    demo_labels[demo] = "drawer_close"

                else:
                    behavior_dict["drawer_open"] += 1
                    demo_labels[demo] = "drawer_open"

                something_happened = True

                break
            elif delta_state["switch"] > 0.02:
                if first_state["switch"] > last_state["switch"]:
                    behavior_dict["switch_off"] += 1
                    demo_labels[demo] = "switch_off"
                else:
                    behavior_dict["switch_on"] += 1
                    demo_labels[demo] = "switch_on"

                something_happened = True
                break
            elif delta_state["green_light"] > 0.01:
                if first_state["green_light"] > last_state["green_light"]:
                    behavior_dict["button_off"] += 1
                    demo_labels[demo] = "button_off"
                else:
                    behavior_dict["button_on"] += 1
                    demo_labels[demo] = "button_off"

                something_happened = True
                break
        if not something_happened:
            behavior_dict["no_behavior"] += 1
            demo_labels[demo] = "no_behavior"
        steps_list.append(step)
    counts = dict(behavior_dict)
    total_sum = sum(behavior_dict.values())
    behavior_dict = {k: v / total_sum for k, v in behavior_dict.items()}
    full_report = {"Full distribution": behavior_dict, "Average Length": np.mean(steps_list),
                   "demo_labels": demo_labels, "counts": counts, "steps": steps_list}
    return full_report


def generate_reset_state(sim_hold, rng):
    """``rng``: a ``random.Random`` (the original uses the module ``random``)."""
    adjustables = ["sliding_door", "drawer", "switch", "green_light"]
    adjustable_index = [0, 1, 3, 5]
    adjustable_limits = [[0, 0.27], [0, 0.16], [0, 0.09], [0, 1]]
    state = np.zeros((24,))
    binary_list = list()
    for adjustable, idx, limits in zip(adjustables, adjustable_index, adjustable_limits):
        if adjustable in sim_hold:
            state[idx] = float(sim_hold[adjustable])
            binary_list.append(sim_hold[adjustable] > (limits[1] - limits[0]) / 2)
        else:
            select = rng.random() > 0.5
            state[idx] = limits[1] if select else limits[0]
            binary_list.append(select)
    return state, binary_list


def articulated_binaries_from_start_state(start_state):
    adjustable_index = [0, 1, 3, 5]
    adjustable_limits = [[0, 0.27], [0, 0.16], [0, 0.09], [0, 1]]
    binary_list = list()
    for idx, limits in zip(adjustable_index, adjustable_limits):
        midpoint = (limits[1] - limits[0]) / 2
        binary_list.append(start_state[idx] > midpoint)
    return binary_list


def check_state_difference(start_state, state, robot_pos, binaries):
    adjustable_index = [0, 1, 3, 5]
    adjustable_limits = [[0, 0.27], [0, 0.16], [0, 0.09], [0, 1]]
    for binary, idx, limits in zip(binaries, adjustable_index, adjustable_limits):
        midpoint = (limits[1] - limits[0]) / 2

        if binary and state[idx] < midpoint:
            return True
        if not binary and state[idx] > midpoint:
            return True

    if np.linalg.norm(robot_pos - state[6:9]) < 0.06 and np.linalg.norm(state[6:8] - start_state[6:8]) > 0.001:
        return True

    if np.linalg.norm(robot_pos - state[12:15]) < 0.06 and np.linalg.norm(state[12:14] - start_state[12:14]) > 0.001:
        return True

    if np.linalg.norm(robot_pos - state[18:21]) < 0.06 and np.linalg.norm(state[18:20] - start_state[18:20]) > 0.001:
        return True

    return False


def rollout_recorded_steps(scene_obs, robot_obs, articulated_binaries, horizon):
    """``run_dynaguide.py`` ``rollout``: how many observations it records before breaking.
    ``scene_obs``/``robot_obs`` ``[>=horizon, ...]``: row ``i`` is ``obs`` at ``step_i`` (row 0 the reset)."""
    obs = {"states": scene_obs[0], "proprio": robot_obs[0]}
    start_state = obs.copy()
    recorded = []
    for step_i in range(horizon):
        next_obs = {"states": scene_obs[step_i + 1], "proprio": robot_obs[step_i + 1]} \
            if step_i + 1 < len(scene_obs) else None
        recorded.append(obs)
        fed_state = obs["states"]
        fed_start_state = start_state["states"]
        fed_proprio = obs["proprio"]
        done = check_state_difference(fed_start_state, fed_state, fed_proprio[0:3], articulated_binaries)
        if done:
            break
        obs = next_obs
    return len(recorded)
