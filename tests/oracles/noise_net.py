"""A tiny epsilon network defined twice, in torch and in JAX with the same weights, so sampler
parity tests can run the original torch loop and ours on identical noise predictions."""
import jax.numpy as jnp
import numpy as np
import torch
from torch import nn


class TorchNoiseNet(nn.Module):
    def __init__(self, horizon, action_dim, cond_dim, hidden=64, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.fc1 = nn.Linear(horizon * action_dim + 1 + cond_dim, hidden)
        self.fc2 = nn.Linear(hidden, horizon * action_dim)

    def forward(self, x, k, cond):
        b = x.shape[0]
        t = torch.full((b, 1), float(k) / 100.0)
        h = torch.tanh(self.fc1(torch.cat([x.reshape(b, -1), t, cond], dim=1)))
        return self.fc2(h).reshape(x.shape)


def jax_params(net: TorchNoiseNet):
    sd = {k: v.detach().numpy() for k, v in net.state_dict().items()}
    return {"w1": sd["fc1.weight"].T, "b1": sd["fc1.bias"], "w2": sd["fc2.weight"].T, "b2": sd["fc2.bias"]}


def jax_eps_fn(params, x, k, cond):
    b = x.shape[0]
    t = jnp.full((b, 1), k.astype(jnp.float32) / 100.0)
    h = jnp.tanh(jnp.concatenate([x.reshape(b, -1), t, cond], axis=1) @ params["w1"] + params["b1"])
    return (h @ params["w2"] + params["b2"]).reshape(x.shape)


def to_numpy(t):
    return np.asarray(t.detach().numpy() if hasattr(t, "detach") else t)
