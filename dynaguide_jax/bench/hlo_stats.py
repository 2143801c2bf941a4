"""Kernel and FLOP counts from a compiled program's after-optimisation HLO text.

A *kernel* is a top-level instruction of a computation that runs as its own device operation: a
fusion, a custom call (cuBLAS, cuDNN, Pallas), or any other non-trivial op (dot, copy, sort, ...).
Bookkeeping ops (parameter, constant, tuple, get-tuple-element, bitcast, ...) are free; control flow
(while, conditional, call) is not a kernel itself: the computations it runs are counted instead, a
while loop's body and condition once per trip (XLA's ``known_trip_count``; 1 when unknown), a
conditional's largest branch. FLOPs are the dots' (``2 * output size * contracted size``, inside
fusions too), trip-weighted: XLA's own ``cost_analysis()`` counts a loop body once, whatever its trip
count. Convolutions and opaque custom calls other than cuBLAS GEMMs (e.g. cuDNN attention) add none.
"""
from __future__ import annotations

import dataclasses
import json
import math
import re

FREE_OPS = frozenset({"parameter", "constant", "get-tuple-element", "tuple", "bitcast", "after-all",
                      "add-dependency", "opt-barrier", "partition-id", "replica-id"})
CONTROL_OPS = frozenset({"while", "conditional", "call"})

_COMP_HEAD = re.compile(r"^(ENTRY\s+)?%?([\w.\-]+)\s*\(.*\)\s*->\s*.*\{\s*$")
_INSTR = re.compile(r"^\s*(ROOT\s+)?%?([\w.\-]+)\s*=\s*(.*)$")
_ARRAY = re.compile(r"([a-z]+\d*)\[([\d,]*)\]")


@dataclasses.dataclass
class Instr:
    name: str
    shape: str
    opcode: str
    operands: list[str]
    attrs: str


@dataclasses.dataclass(frozen=True)
class KernelStats:
    """Counts of one compiled program (see the module doc).

    kernels: kernels one run executes (trip-weighted); kernels_in_loops: those inside while loops;
    loops: ``(body name, trips per program run, kernels per trip, nesting depth)`` for every while
    loop, outer before inner;
    innermost_body_kernels: kernels per trip of the innermost loop(s) (max), 0 without loops;
    dot_flops: trip-weighted FLOPs of the dots.
    """

    kernels: int
    kernels_in_loops: int
    loops: tuple[tuple[str, int, int, int], ...]
    innermost_body_kernels: int
    dot_flops: float


def _matching(text: str, start: int) -> int:
    """Index just past the parenthesis group opening at ``text[start]``."""
    depth = 0
    for i in range(start, len(text)):
        depth += {"(": 1, ")": -1}.get(text[i], 0)
        if depth == 0:
            return i + 1
    raise ValueError(f"unbalanced parentheses in HLO line: {text!r}")


def _parse_instr(line: str) -> Instr | None:
    m = _INSTR.match(line)
    if not m:
        return None
    name, rest = m.group(2), m.group(3).strip()
    if rest.startswith("("):  # tuple shape
        end = _matching(rest, 0)
        shape, rest = rest[:end], rest[end:].strip()
    else:
        shape, _, rest = rest.partition(" ")
    paren = rest.find("(")
    if paren < 0:
        return None
    opcode = rest[:paren].strip()
    end = _matching(rest, paren)
    operands = re.findall(r"%([\w.\-]+)", rest[paren:end])
    return Instr(name, shape, opcode, operands, rest[end:])


def parse_hlo(text: str) -> tuple[dict[str, list[Instr]], str]:
    """``({computation name: instructions}, entry name)`` of an HLO module's text."""
    comps: dict[str, list[Instr]] = {}
    entry, current = None, None
    for line in text.splitlines():
        head = _COMP_HEAD.match(line)
        if head and not line.startswith(" "):
            current = head.group(2)
            comps[current] = []
            if head.group(1):
                entry = current
            continue
        if current is None:
            continue
        if line.strip() == "}":
            current = None
            continue
        instr = _parse_instr(line)
        if instr is not None:
            comps[current].append(instr)
    if entry is None:
        raise ValueError("no ENTRY computation in the HLO text")
    return comps, entry


def _attr(attrs: str, key: str) -> str | None:
    m = re.search(rf"\b{key}=%?([\w.\-]+)", attrs)
    return m.group(1) if m else None


def _trip_count(attrs: str) -> int:
    m = re.search(r'"known_trip_count":\{"n":"(\d+)"\}', attrs)
    return int(m.group(1)) if m else 1


def _dims(shape: str) -> list[int]:
    m = _ARRAY.search(shape)
    return [int(d) for d in m.group(2).split(",") if d] if m else []


def _dot_flops(ins: Instr, shapes: dict[str, str]) -> float:
    if ins.opcode == "dot":
        m = re.search(r"lhs_contracting_dims=\{([\d,]*)\}", ins.attrs)
        contracting = [int(d) for d in m.group(1).split(",") if d] if m else []
    elif ins.opcode == "custom-call" and "gemm" in ins.attrs:
        m = re.search(r"backend_config=(\{.*\})", ins.attrs)
        try:
            cfg = json.loads(m.group(1)) if m else {}
        except json.JSONDecodeError:
            return 0.0
        dnums = cfg.get("gemm_backend_config", cfg).get("dot_dimension_numbers", {})
        contracting = [int(d) for d in dnums.get("lhs_contracting_dimensions", [])]
    else:
        return 0.0
    lhs = _dims(shapes.get(ins.operands[0], "")) if ins.operands else []
    k = math.prod(lhs[d] for d in contracting if d < len(lhs))
    return 2.0 * math.prod(_dims(ins.shape)) * k


def hlo_kernel_stats(text: str) -> KernelStats:
    """Kernel and dot-FLOP counts of an after-optimisation HLO module (``compiled.as_text()``)."""
    comps, entry = parse_hlo(text)
    shapes = {c: {i.name: i.shape for i in instrs} for c, instrs in comps.items()}
    loops: list[tuple[str, int, int, int]] = []
    has_inner: dict[str, bool] = {}

    def flops_in(comp: str) -> float:  # every dot of a computation and what it calls (fusions included)
        total = 0.0
        for ins in comps.get(comp, []):
            total += _dot_flops(ins, shapes[comp])
            if ins.opcode == "fusion":
                total += flops_in(_attr(ins.attrs, "calls") or "")
        return total

    def walk(comp: str, runs: int, depth: int) -> tuple[int, int, float, bool]:
        """(kernels, kernels inside loops, flops, contains a loop) of one run of ``comp``, which runs
        ``runs`` times per program inside ``depth`` loops (both only recorded in ``loops``)."""
        kernels = looped = 0
        flops, nested = 0.0, False
        for ins in comps.get(comp, []):
            if ins.opcode == "while":
                body, cond, trips = _attr(ins.attrs, "body"), _attr(ins.attrs, "condition"), _trip_count(ins.attrs)
                slot = len(loops)
                loops.append((body, runs * trips, 0, depth))
                bk, _, bf, inner = walk(body, runs * trips, depth + 1)
                ck, _, cf, _ = walk(cond, runs * trips, depth + 1)
                loops[slot] = (body, runs * trips, bk + ck, depth)
                has_inner[body] = inner
                kernels += trips * (bk + ck)
                looped += trips * (bk + ck)
                flops += trips * (bf + cf)
                nested = True
            elif ins.opcode in ("conditional", "call"):
                names = re.findall(r"%([\w.\-]+)", _branches(ins.attrs))
                parts = [walk(n, runs, depth) for n in names]
                if parts:
                    best = max(parts, key=lambda p: p[0])
                    kernels, looped = kernels + best[0], looped + best[1]
                    flops, nested = flops + best[2], nested or best[3]
            elif ins.opcode not in FREE_OPS:
                kernels += 1
                looped += 1 if depth else 0
                flops += _dot_flops(ins, shapes[comp])
                if ins.opcode == "fusion":
                    flops += flops_in(_attr(ins.attrs, "calls") or "")
        return kernels, looped, flops, nested

    kernels, looped, flops, _ = walk(entry, 1, 0)
    inner = [k for body, _, k, _ in loops if not has_inner.get(body, False)]
    return KernelStats(kernels, looped, tuple(loops), max(inner, default=0), flops)


def _branches(attrs: str) -> str:
    m = re.search(r"branch_computations=\{([^}]*)\}", attrs)
    if m:
        return m.group(1)
    parts = [f"%{v}" for key in ("to_apply", "true_computation", "false_computation")
             if (v := _attr(attrs, key))]
    return " ".join(parts)


def compiled_text(fn, *args, **kwargs) -> str:
    """After-optimisation HLO of ``fn`` (jitted or not) compiled for ``args``."""
    import jax

    jitted = fn if hasattr(fn, "lower") else jax.jit(fn)
    return jitted.lower(*args, **kwargs).compile().as_text()


def compiled_stats(fn, *args, **kwargs) -> KernelStats:
    """``hlo_kernel_stats`` of ``fn`` compiled for ``args`` (static arguments as ``kwargs``)."""
    return hlo_kernel_stats(compiled_text(fn, *args, **kwargs))


def main_loop_kernels(stats: KernelStats) -> int:
    """Kernels the heaviest outermost while loop runs in one program run (0 without loops)."""
    return max((trips * k for _, trips, k, depth in stats.loops if depth == 0), default=0)


def kernels_per_iteration(stats: KernelStats, iterations: int) -> float:
    """Kernels per iteration of a program built around one loop (e.g. the sampler's denoising loop):
    the heaviest outermost loop's kernels over ``iterations``. Small side loops (a CPU's threefry
    RNG) are left out; when that loop holds under half of all kernels (everything unrolled into
    straight-line code), the whole program's count over ``iterations``."""
    main = main_loop_kernels(stats)
    return (main if 2 * main >= stats.kernels else stats.kernels) / max(iterations, 1)
