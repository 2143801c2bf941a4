"""Oracle: goal embeddings from goal trajectories, MaxDu17/DynaGuide ``core/dynaguide.py``
``calculate_classifier_guidance`` (the good-embeddings loop) over ``core/embedder_datasets.py``
``MultiviewDataset`` (``get_labeled_item``; the rest in ``embedder_dataset.py``)
with ``padding=True``, as ``run_dynaguide.py`` builds it (``pad_mode="repeat"``).

Differences: the HDF5 file is a list of in-memory demos ``{"actions": [L, A], "obs": {camera:
[L, H, W, 3], proprio: [L, p]}}`` (the order of ``demos_list``); the label lookup is dropped (None);
``prepare_np`` runs on the CPU.
"""
import numpy as np
import torch

from tests.oracles import embedder_dataset


class MultiviewDataset(embedder_dataset.MultiviewDataset):
    """The original dataset (``tests/oracles/embedder_dataset.py``) plus ``get_labeled_item``."""

    def get_labeled_item(self, idx):
        demo, remaining_idx = self.parse_idx(idx)
        selected_demo = self.demos[demo]
        label = None

        selected_state = {camera: np.transpose(selected_demo["obs"][camera][remaining_idx], (2, 0, 1))
                          for camera in self.cameras}
        if self.proprio is not None:
            selected_state[self.proprio] = selected_demo["obs"][self.proprio][remaining_idx]

        if not self.padding or remaining_idx + self.action_chunk_length <= self.lengths_list[demo]:
            selected_actions = selected_demo["actions"][remaining_idx: remaining_idx + self.action_chunk_length]
            return selected_state, selected_actions, label

        amount_to_pad = remaining_idx + self.action_chunk_length - self.lengths_list[demo]
        selected_actions = np.zeros((self.action_chunk_length, selected_demo["actions"].shape[1]))
        if amount_to_pad == 0:
            selected_actions = selected_demo["actions"][remaining_idx:]
        else:
            selected_actions[:-amount_to_pad] = selected_demo["actions"][remaining_idx:]

        if self.pad_mode == "repeat":
            selected_actions[-amount_to_pad:] = selected_demo["actions"][-1]

        return selected_state, selected_actions, label


def prepare_np(data, device="cpu"):
    if type(data) is dict:
        return {k: torch.tensor(v).to(device).to(torch.float32) for k, v in data.items()}
    return torch.tensor(data).to(device).to(torch.float32)


def good_embeddings(model, good_dataset):
    """``[K, D]``: the model's prediction at the last step of every goal demo, flattened."""
    good_embeddings_list = list()
    idx = 0
    for length in good_dataset.lengths_list:
        idx += length
        sample = good_dataset.get_labeled_item(idx - 1)
        state, action, _label = prepare_np(sample[0]), prepare_np(sample[1]), sample[2]
        state = {k: torch.unsqueeze(v, dim=0) for k, v in state.items()}
        action = torch.unsqueeze(action, dim=0)
        with torch.no_grad():
            good_embedding = model.state_action_embedding(state, action).flatten(start_dim=1)
        good_embeddings_list.append(good_embedding.clone())
    return torch.concatenate(good_embeddings_list, dim=0)
