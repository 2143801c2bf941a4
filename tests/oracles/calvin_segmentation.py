"""Oracle: the original's CALVIN segmentation, MaxDu17/DynaGuide
``data_processing_calvin/calvin_to_labeled_hdf5.py``, followed line by line.

Differences, none of which change which frames form which demo or its label: the frames come as a
list (``{"scene_obs", "robot_obs", "rel_actions"}`` in sorted file order) instead of ``np.load`` of
every ``.npz`` of the folder; a demo is its list of frame positions instead of an HDF5 group (videos,
prints and HDF5 writes dropped); ``save_probability`` is the original's ``random.random() > 0``,
true except with probability 2**-53, written as ``True``. The trailing demo (frames after the last
cut, saved without a ``behavior`` attribute) is returned with ``None``; the original crashes
(``np.stack([])``) when it is empty, it is returned empty here.
"""
import numpy as np
from scipy.spatial.transform import Rotation as R

SCALING_FACTOR = {"sliding_door": 10,
                  "drawer": 10,
                  "button": 10,
                  "switch": 10,
                  "lightbulb": 0,
                  "green_light": 0,
                  "red_block": 1,
                  "blue_block": 1,
                  "pink_block": 1}


def segment_states(state_obs):
    return {"sliding_door": state_obs[0],
            "drawer": state_obs[1],
            "button": state_obs[2],
            "switch": state_obs[3],
            "lightbulb": state_obs[4],
            "green_light": state_obs[5],
            "red_block": state_obs[6:9],
            "blue_block": state_obs[12: 15],
            "pink_block": state_obs[18:21]}, {
            "red_rot": R.from_euler("XYZ", state_obs[9:12]).as_matrix(),
            "blue_rot": R.from_euler("XYZ", state_obs[15:18]).as_matrix(),
            "pink_rot": R.from_euler("XYZ", state_obs[21:]).as_matrix()
            }


def segment(frames):
    """``[(frame positions, behavior or None), ...]``: the demos the original would save, in order."""
    demos = []
    waiting = True
    moving = False
    to_segment = False
    move_count = 0
    last_state, last_rot = segment_states(frames[0]["scene_obs"])
    ACTIVE_EPSILON = 0.001
    RELEASE_EPSILON = 0.001
    MIN_LENGTH = 16

    action_list = list()
    frame_list = list()  # stands for the image / state / proprio lists

    behavior = None
    start_interaction_state = None
    end_interaction_state = None

    for position, data in enumerate(frames):
        current_state, current_rot = segment_states(data["scene_obs"])
        if start_interaction_state is None:
            start_interaction_state = current_state

        delta_state = {k: SCALING_FACTOR[k] * np.linalg.norm(current_state[k] - last_state[k]).item()
                       for k in current_state.keys()}
        delta_rot = {k: np.linalg.norm(R.from_matrix(current_rot[k] @ np.linalg.inv(last_rot[k]))
                                       .as_euler("XYZ")).item() for k in current_rot.keys()}
        to_segment = False
        active_touching = np.any(np.array(list(delta_state.values())) > ACTIVE_EPSILON) or \
            np.any(np.array(list(delta_rot.values())) > ACTIVE_EPSILON)
        release_touching = np.any(np.array(list(delta_state.values())) > RELEASE_EPSILON) or \
            np.any(np.array(list(delta_rot.values())) > RELEASE_EPSILON)
        if moving:
            move_count += 1
        if waiting and active_touching:
            moving = True
            waiting = False
            if delta_state["red_block"] > ACTIVE_EPSILON or delta_state["blue_block"] > ACTIVE_EPSILON or \
                    delta_state["pink_block"] > ACTIVE_EPSILON:
                eef_pos = data["robot_obs"][0:3]
                if np.linalg.norm(eef_pos - current_state["red_block"]) < 0.05 or \
                        np.linalg.norm(eef_pos - current_state["blue_block"]) < 0.05 \
                        or np.linalg.norm(eef_pos - current_state["pink_block"]) < 0.05:
                    to_segment = True

        elif moving and not release_touching:
            waiting = True
            moving = False
            to_segment = True
            if move_count < 10:
                to_segment = False

            move_count = 0
            if len(action_list) < MIN_LENGTH:
                to_segment = False

            if current_state["green_light"] != start_interaction_state["green_light"]:
                to_segment = True

        if to_segment:
            end_interaction_state = current_state
            if end_interaction_state["green_light"] > 0.8 and start_interaction_state["green_light"] < 0.2:
                behavior = "button_on"
            elif end_interaction_state["green_light"] < 0.2 and start_interaction_state["green_light"] > 0.8:
                behavior = "button_off"
            elif end_interaction_state["switch"] < 0.01 and start_interaction_state["switch"] > 0.07:
                behavior = "switch_off"
            elif end_interaction_state["switch"] > 0.07 and start_interaction_state["switch"] < 0.01:
                behavior = "switch_on"
            elif end_interaction_state["drawer"] < 0.05 and start_interaction_state["drawer"] > 0.10:
                behavior = "drawer_close"
            elif end_interaction_state["drawer"] > 0.10 and start_interaction_state["drawer"] < 0.05:
                behavior = "drawer_open"
            elif end_interaction_state["sliding_door"] < 0.05 and start_interaction_state["sliding_door"] > 0.25:
                behavior = "door_right"
            elif end_interaction_state["sliding_door"] > 0.25 and start_interaction_state["sliding_door"] < 0.05:
                behavior = "door_left"
            elif np.linalg.norm(end_interaction_state["red_block"] - start_interaction_state["red_block"] > 0.01):
                behavior = "red_displace"
            elif np.linalg.norm(end_interaction_state["blue_block"] - start_interaction_state["blue_block"] > 0.01):
                behavior = "blue_displace"
            elif np.linalg.norm(end_interaction_state["pink_block"] - start_interaction_state["pink_block"] > 0.01):
                behavior = "pink_displace"
            elif moving and delta_state["red_block"] > ACTIVE_EPSILON:
                behavior = "red_lift"
            elif moving and delta_state["pink_block"] > ACTIVE_EPSILON:
                behavior = "pink_lift"
            elif moving and delta_state["blue_block"] > ACTIVE_EPSILON:
                behavior = "blue_lift"
            else:
                behavior = "other"

            start_interaction_state = current_state

        clipped_rel_actions = np.clip(data["rel_actions"], -1, 1)
        action_list.append(clipped_rel_actions)
        frame_list.append(position)

        save_probability = True  # random.random() > 0

        if to_segment and save_probability:
            demos.append((list(frame_list), behavior if behavior is not None else "other"))
            action_list.clear()
            frame_list.clear()
            behavior = None
        elif to_segment:
            action_list.clear()
            frame_list.clear()
            behavior = None

        last_state = current_state
        last_rot = current_rot
        to_segment = False

    demos.append((list(frame_list), None))  # the final demo, saved without a behavior
    return demos
