"""Kernel and FLOP counts from compiled HLO (bench/hlo_stats.py) and the device floors (bench/roofline.py)."""
import jax
import jax.numpy as jnp
import pytest

from dynaguide_jax.bench.guided_inference import program_fields
from dynaguide_jax.bench.hlo_stats import compiled_stats, hlo_kernel_stats, kernels_per_iteration, parse_hlo
from dynaguide_jax.bench.roofline import device_peaks, floor_fields, params_bytes
from dynaguide_jax.diffusion import DDIMSchedule
from dynaguide_jax.diffusion.sampler import _guided_sample_jit
from dynaguide_jax.dynamics import DynamicsConfig, init_dynamics
from dynaguide_jax.guidance import DynaGuide, GoalSet
from dynaguide_jax.policy import line_prototypes, mixture_eps, mixture_params

# a while loop (5 trips) whose body runs a dot fusion, a custom call and an add; its condition a compare
MODULE = """HloModule known, entry_computation_layout={(f32[8,4]{1,0})->f32[8,4]{1,0}}

%fused_dot (p0: f32[8,4], p1: f32[4,2]) -> f32[8,2] {
  %p0 = f32[8,4]{1,0} parameter(0)
  %p1 = f32[4,2]{1,0} parameter(1)
  ROOT %d = f32[8,2]{1,0} dot(%p0, %p1), lhs_contracting_dims={1}, rhs_contracting_dims={0}
}

%body (t: (s32[], f32[8,4])) -> (s32[], f32[8,4]) {
  %t = (s32[], f32[8,4]{1,0}) parameter(0)
  %i = s32[] get-tuple-element(%t), index=0
  %x = f32[8,4]{1,0} get-tuple-element(%t), index=1
  %one = s32[] constant(1)
  %w = f32[4,2]{1,0} constant({ {1, 2}, {3, 4}, {5, 6}, {7, 8} })
  %f = f32[8,2]{1,0} fusion(%x, %w), kind=kCustom, calls=%fused_dot
  %cc = f32[8,4]{1,0} custom-call(%f), custom_call_target="widen"
  %n = s32[] add(%i, %one)
  ROOT %r = (s32[], f32[8,4]{1,0}) tuple(%n, %cc)
}

%cond (t.1: (s32[], f32[8,4])) -> pred[] {
  %t.1 = (s32[], f32[8,4]{1,0}) parameter(0)
  %i.1 = s32[] get-tuple-element(%t.1), index=0
  %c = s32[] constant(5)
  ROOT %lt = pred[] compare(%i.1, %c), direction=LT
}

ENTRY %main (x.0: f32[8,4]) -> f32[8,4] {
  %x.0 = f32[8,4]{1,0} parameter(0)
  %z = s32[] constant(0)
  %t.0 = (s32[], f32[8,4]{1,0}) tuple(%z, %x.0)
  %loop = (s32[], f32[8,4]{1,0}) while(%t.0), condition=%cond, body=%body, backend_config={"known_trip_count":{"n":"5"}}
  %g = f32[8,4]{1,0} get-tuple-element(%loop), index=1
  ROOT %e = f32[8,4]{1,0} exponential(%g)
}
"""


def test_counts_of_a_known_module():
    comps, entry = parse_hlo(MODULE)
    assert entry == "main" and set(comps) == {"fused_dot", "body", "cond", "main"}
    s = hlo_kernel_stats(MODULE)
    # per trip: fusion + custom-call + add (body) + compare (condition); once: the exponential
    assert s.loops == (("body", 5, 4, 0),) and s.innermost_body_kernels == 4
    assert (s.kernels, s.kernels_in_loops) == (5 * 4 + 1, 5 * 4)
    assert s.dot_flops == 5 * 2 * (8 * 2) * 4
    assert kernels_per_iteration(s, 5) == 4.0
    unknown = hlo_kernel_stats(MODULE.replace(', backend_config={"known_trip_count":{"n":"5"}}', ""))
    assert unknown.kernels == 4 + 1 and unknown.dot_flops == 2 * 16 * 4  # no trip count: counted once
    with pytest.raises(ValueError, match="no ENTRY"):
        parse_hlo(MODULE.replace("ENTRY ", ""))


def test_gpu_gemm_custom_call_flops():
    """cuBLAS GEMMs are custom calls with a tuple output (result, workspace) and the dimension numbers in JSON."""
    gemm = ('  %g = (f32[8,2]{1,0}, s8[64]{0}) custom-call(%x.0, %w), custom_call_target="__cublas$gemm", '
            'backend_config={"gemm_backend_config":{"dot_dimension_numbers":{"lhs_contracting_dimensions":["1"],'
            '"rhs_contracting_dimensions":["0"]}}}\n')
    text = ("HloModule g\n\nENTRY %main (x.0: f32[8,4], w: f32[4,2]) -> f32[8,2] {\n"
            "  %x.0 = f32[8,4]{1,0} parameter(0)\n  %w = f32[4,2]{1,0} parameter(1)\n" + gemm +
            "  ROOT %r = f32[8,2]{1,0} get-tuple-element(%g), index=0\n}\n")
    s = hlo_kernel_stats(text)
    assert s.kernels == 1 and s.dot_flops == 2 * 16 * 4 and s.loops == ()


def test_counts_of_a_compiled_nested_loop():
    def f(x, w):
        inner = lambda i, x: jnp.tanh(x @ w) + 1.0  # noqa: E731
        return jax.lax.scan(lambda x, _: (jax.lax.fori_loop(0, 4, inner, x), None), x, None, length=3)[0]

    s = compiled_stats(f, jnp.ones((8, 8)), jnp.ones((8, 8)))
    assert [(trips, depth) for _, trips, _, depth in s.loops] == [(3, 0), (12, 1)]
    assert s.dot_flops == 12 * 2 * 8 * 8 * 8  # trip-weighted (cost_analysis counts one trip)
    outer, inner = s.loops[0][2], s.loops[1][2]
    assert 1 <= inner and outer >= 4 * inner and s.innermost_body_kernels == inner
    assert kernels_per_iteration(s, 12) == pytest.approx(3 * outer / 12)
    straight = compiled_stats(lambda x, w: jnp.tanh(x @ w), jnp.ones((8, 8)), jnp.ones((8, 8)))
    assert straight.loops == () and straight.kernels >= 1 and kernels_per_iteration(straight, 2) == straight.kernels / 2


def sampler_stats(precompute):
    dyn = DynamicsConfig.preset("small").replace(num_layers=1)
    params = {"dynamics": init_dynamics(dyn, jax.random.key(1)), "sigma": 30.0,
              "goals": GoalSet.create(jax.random.normal(jax.random.key(2), (3, 16 * 64)))}
    schedule = DDIMSchedule(num_inference_steps=3)
    obs = {"patches": jnp.ones((1, 16, 64)), "proprio": jnp.zeros((1, 15))}
    return compiled_stats(_guided_sample_jit, mixture_eps, mixture_params(line_prototypes(2, 16, 7), schedule),
                          jnp.zeros((1, 1)), DynaGuide(dynamics=dyn, precompute=precompute), params, obs,
                          jax.random.key(0), jnp.float32(1.0), None, schedule=schedule, action_shape=(16, 7),
                          repeats=2, mode="repeat", unroll=1)


def test_guided_sampler_kernels_per_iteration_positive_and_stable():
    plain, again, pre = sampler_stats("none"), sampler_stats("none"), sampler_stats("projections")
    assert plain == again
    per_iter = kernels_per_iteration(plain, 6)
    assert 20 < per_iter < 1000 and plain.innermost_body_kernels > 20
    # the loop is steps (3) x repeats (2); the guidance's dots dominate the FLOPs
    assert [(trips, depth) for _, trips, _, depth in plain.loops][-2:] == [(3, 0), (6, 1)]
    assert pre.dot_flops < plain.dot_flops  # layer 1's observation projections left the loop
    fields = program_fields(plain, 6, 0.5)
    assert fields["kernels_per_iteration"] == round(per_iter, 1)
    assert fields["achieved_tflop_s"] == round(plain.dot_flops / 0.5 / 1e12, 4)


def test_floors():
    assert device_peaks("NVIDIA H100 80GB HBM3") == (989.0, 495.0, 3.35)
    assert device_peaks("NVIDIA H100 PCIe")[0] == 756.0 and device_peaks("cpu") is None
    assert floor_fields("cpu", "float32", 1e12, 1e9, 1.0)["time_over_floor"] == "n/a"
    f = floor_fields("NVIDIA H100 80GB HBM3", "bfloat16", 989e12 * 1e-3, 3.35e12 * 2e-3, 0.01)
    assert f["floor_bound"] == "hbm" and f["floor_ms"] == 2.0 and f["time_over_floor"] == 5.0
    assert floor_fields("TPU v4", "float32", 1.0, 1.0, 1.0)["floor_ms"] == "n/a"  # no fp32 peak listed
    assert params_bytes({"a": jnp.ones((3, 4)), "b": [jnp.ones(5)]}, "bfloat16") == 2 * 17
