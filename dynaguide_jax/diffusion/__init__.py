"""DDIM schedule and the guided sampler."""
from dynaguide_jax.diffusion.sampler import SampleOutput, guided_sample, sample_chunk
from dynaguide_jax.diffusion.schedule import DDIMSchedule, add_noise, ddim_step, ddim_update
from dynaguide_jax.diffusion.sweep import SweepOutput, sweep

__all__ = ["DDIMSchedule", "SampleOutput", "SweepOutput", "add_noise", "ddim_step", "ddim_update",
           "guided_sample", "sample_chunk", "sweep"]
