"""Oracle: robot reset poses of MaxDu17/DynaGuide ``data_processing_calvin/retrieve_initial_robot_states.py``,
line by line.

Differences: demos are ``(attrs, proprio)`` pairs instead of HDF5 groups (``attrs`` a dict that may lack
"behavior", as the script's unlabelled demo does); the x condition, which the script applies for the
"right_side_midpoint" list it writes, is a flag (the "midpoint" list it ships was made without it);
the unused behaviour-distribution bookkeeping is dropped.
"""


def reset_poses(demos, right_side=True):
    robot_state_list = list()
    for attrs, proprio in demos:
        if "behavior" not in attrs:
            continue
        if attrs["behavior"] == "other":
            continue
        if proprio.shape[0] < 8:
            continue
        initial_robot_state = proprio[8]
        if initial_robot_state[6] < 0.075:  # robot should have open gripper
            continue
        if initial_robot_state[2] < 0.53:  # robot should be high enough on the table
            continue
        if right_side and (initial_robot_state[0] < 0 or initial_robot_state[0] > 0.35):
            continue
        robot_state_list.append(initial_robot_state.tolist())
    return robot_state_list
