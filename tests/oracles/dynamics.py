"""Torch oracle of the original ``FinalStatePredictionDino`` with its exact module / key names.

Faithful to MaxDu17/DynaGuide core/dynamics_models.py (facts, not code): an ``ActionEmbedding``
(kernel-1 Conv1d ``patch_embed`` flattened "b d t -> b 1 (d t)", plus an unused ``out_project``),
``proprio_embedder``, learned ``pos_embedding`` (randn), ``nn.TransformerEncoder`` of
``nn.TransformerEncoderLayer(d_model, nhead=8, batch_first=True)`` x 6, a frozen hub DinoV2 as
``state_encoder`` with the Resize(224) + Normalize(ImageNet*255) transform, and a
visualisation-only ``reconstruction_model``. The original hard-codes 224 px / 256 tokens / 384
dims; they are parameters here so the tests can run small.
"""
import torch
import torch.nn.functional as F
from torch import nn

MEAN = torch.tensor((123.675, 116.28, 103.53)).view(1, 3, 1, 1)
STD = torch.tensor((58.395, 57.12, 57.375)).view(1, 3, 1, 1)


class ActionEmbedding(nn.Module):
    def __init__(self, num_frames, in_chans, emb_dim):
        super().__init__()
        out = emb_dim // num_frames
        self.patch_embed = nn.Conv1d(in_chans, out, kernel_size=1, stride=1)
        self.out_project = nn.Linear(num_frames * out, emb_dim)  # unused, as in the original

    def forward(self, x):
        x = self.patch_embed(x.permute(0, 2, 1))
        return x.reshape(x.shape[0], 1, -1)


class FinalStatePredictionDino(nn.Module):
    def __init__(self, encoder, action_dim=7, action_horizon=16, cameras=("third_person",),
                 proprio="proprio", proprio_dim=15, dim=384, layers=6, heads=8, image_size=224,
                 predicted_tokens=256, patches_per_camera=256):
        super().__init__()
        self.action_embedder = ActionEmbedding(action_horizon, action_dim, dim)
        self.state_encoder = encoder
        self.proprio = proprio
        n_tokens = len(cameras) * patches_per_camera + 1 + (proprio is not None)
        if proprio is not None:
            self.proprio_embedder = nn.Linear(proprio_dim, dim)
        self.pos_embedding = nn.Parameter(torch.randn(1, n_tokens, dim))
        for p in self.state_encoder.parameters():
            p.requires_grad = False
        self.state_encoder.eval()
        layer = nn.TransformerEncoderLayer(d_model=dim, nhead=heads, batch_first=True)
        self.state_decoder_transformer = nn.TransformerEncoder(layer, num_layers=layers,
                                                               enable_nested_tensor=False)
        self.cameras = cameras
        self.image_size = image_size
        self.predicted_tokens = predicted_tokens
        self.reconstruction_model = nn.Sequential(nn.Conv2d(dim, 8, 1))

    def image_transform(self, img):  # torchvision Resize on tensors == antialiased bilinear
        img = F.interpolate(img, size=(self.image_size, self.image_size), mode="bilinear",
                            align_corners=False, antialias=True)
        return (img - MEAN) / STD

    def compute_image_state_patches(self, state):
        out = [self.state_encoder.forward_features(self.image_transform(state[c]))["x_norm_patchtokens"]
               for c in self.cameras]
        return torch.cat(out, dim=1)

    def predict_from_patches(self, patches, proprio, actions):
        tokens = [patches]
        if self.proprio is not None:
            tokens.append(self.proprio_embedder(proprio).unsqueeze(1))
        tokens.append(self.action_embedder(actions))
        x = torch.cat(tokens, dim=1) + self.pos_embedding
        return self.state_decoder_transformer(x)[:, : self.predicted_tokens]

    def state_action_embedding(self, state, actions):
        patches = self.compute_image_state_patches(state)
        proprio = state[self.proprio] if self.proprio is not None else None
        return self.predict_from_patches(patches, proprio, actions)
