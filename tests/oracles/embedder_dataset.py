"""The original's dynamics-model training dataset, for parity tests of ``DynamicsWindows``.

Written from DynaGuide's core/embedder_datasets.py (``MultiviewDataset``: ``build_lengths_list``,
``parse_idx``, ``__getitem__`` in "embedding" mode), line by line, with the hdf5 file replaced by
a list of demos ``{"actions": [L, A], "obs": {key: [L, ...]}}`` in demo order. train_dynaguide.py
builds it with ``padding=True, pad_mode="zeros"``; images are stored [L, H, W, 3] and returned
channels-first, as the original does.
"""
import numpy as np


class MultiviewDataset:
    def __init__(self, demos, action_chunk_length, cameras, padding=False, pad_mode="zeros", proprio=None):
        self.padding = padding
        self.proprio = proprio
        self.demos = demos
        self.lengths_list = []
        self.action_chunk_length = action_chunk_length
        self.pad_mode = pad_mode
        self.cameras = cameras
        self.build_lengths_list()

    def build_lengths_list(self):
        for demo in self.demos:
            if not self.padding:
                self.lengths_list.append(demo["actions"].shape[0] - self.action_chunk_length)
            else:
                self.lengths_list.append(demo["actions"].shape[0])

    def __len__(self):
        return sum(self.lengths_list)

    def parse_idx(self, idx):
        demo = 0
        remaining_idx = idx
        while remaining_idx >= self.lengths_list[demo]:
            remaining_idx -= self.lengths_list[demo]
            demo += 1
        return demo, remaining_idx

    def __getitem__(self, idx):
        demo, remaining_idx = self.parse_idx(idx)
        selected_demo = self.demos[demo]
        selected_state = {c: np.transpose(selected_demo["obs"][c][remaining_idx], (2, 0, 1)) for c in self.cameras}
        last_selected_state = {c: np.transpose(selected_demo["obs"][c][-1], (2, 0, 1)) for c in self.cameras}
        if self.proprio is not None:
            selected_state[self.proprio] = selected_demo["obs"][self.proprio][remaining_idx]
            last_selected_state[self.proprio] = selected_demo["obs"][self.proprio][-1]
        target = last_selected_state
        if not self.padding or remaining_idx + self.action_chunk_length <= self.lengths_list[demo]:
            selected_actions = selected_demo["actions"][remaining_idx: remaining_idx + self.action_chunk_length]
            return selected_state, selected_actions, target
        amount_to_pad = remaining_idx + self.action_chunk_length - self.lengths_list[demo]
        selected_actions = np.zeros((self.action_chunk_length, selected_demo["actions"].shape[1]))
        if self.pad_mode == "repeat":
            selected_actions[-amount_to_pad:] = selected_demo["actions"][-1]
        selected_actions[:-amount_to_pad] = selected_demo["actions"][remaining_idx:]
        return selected_state, selected_actions, target
