"""The original guided DDIM loop (robomimic ``_get_action_trajectory_guidance``) and the
original guidance closures, in torch with diffusers' DDIMScheduler. Oracle for sampler parity."""
import torch
from diffusers import DDIMScheduler


def original_scheduler(num_train=100, beta_schedule="squaredcos_cap_v2"):
    return DDIMScheduler(num_train_timesteps=num_train, beta_schedule=beta_schedule, clip_sample=True,
                         prediction_type="epsilon", steps_offset=0, set_alpha_to_one=True)


def classifier_guidance(model, good, bad, scale, alpha, state):
    """``calculate_classifier_guidance``'s inner closure: grad of LSE(-cdist/alpha) w.r.t. actions."""

    def guidance(actions):
        pred = model.state_action_embedding(state, actions).flatten(start_dim=1)
        d = 0
        if good is not None:
            d = torch.logsumexp(-torch.cdist(good, pred, p=2.0) / alpha, dim=0)
        if bad is not None:
            d = d - torch.logsumexp(-torch.cdist(bad, pred, p=2.0) / alpha, dim=0)
        # the original calls autograd.grad on a batch-1 vector; summing is the batched equivalent
        grad = torch.autograd.grad(d.sum(), actions)[0]
        return scale * grad

    return guidance


def position_guidance(target, scale, start_xyz):
    def guidance(actions):
        grad = torch.zeros_like(actions)
        pos = torch.cumsum(actions[:, :, 0:3] / 40, dim=1) + start_xyz[:, None]
        grad[:, :, 0:3] = target - pos
        return scale * grad

    return guidance


def guided_loop(noise_net, obs_cond, guidance, scheduler, noise, ss, num_inference_steps=10):
    naction = noise.clone()
    scheduler.set_timesteps(num_inference_steps)
    naction.requires_grad = True
    for k in scheduler.timesteps:
        for _ in range(ss):
            noise_pred = noise_net(naction, k, obs_cond)
            if guidance is not None:
                noise_pred = noise_pred - (1 - scheduler.alphas_cumprod[k]).sqrt() * guidance(naction)
            naction = scheduler.step(model_output=noise_pred, timestep=k, sample=naction).prev_sample
    return naction.detach()
