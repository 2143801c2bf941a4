"""The original GPC baseline's scoring, in torch: MaxDu17/DynaGuide run_sampling_baseline.py,
``run_rejection_sampling`` (scores and argmin; the image collage is left out) and the goals of
``precompute_good_final_states`` (``state_embedding(...).flatten(start_dim=1)``, concatenated).
Negative goals (``bad_embeddings``) are passed to ``rollout`` but never scored, so there are none."""
import numpy as np
import torch


def good_final_states(state_embeddings):
    """``precompute_good_final_states``: one ``[1, P, D]`` encoder embedding per goal trajectory."""
    return torch.concatenate([e.flatten(start_dim=1).clone() for e in state_embeddings], dim=0)


def run_rejection_sampling(model, actions_list, good_embeddings, fed_state):
    """``model(fed_state, action) -> (s_end_embedding [1, P, D], reco_image)``; returns (closest, scores)."""
    scores_list = list()
    for action in actions_list:
        with torch.no_grad():
            s_end_embedding, _ = model(fed_state, action)
        s_end_embedding = s_end_embedding.flatten(start_dim=1)
        s_norm = torch.cdist(good_embeddings, s_end_embedding, p=2.0)
        sa_average_norm = torch.mean(s_norm).detach().cpu().numpy()
        scores_list.append(sa_average_norm)
    closest = np.argmin(np.array(scores_list))
    return closest, scores_list
