"""The one timer of the benchmarks: providers interleaved round by round, percentiles, paired ratios, and memory
(peak bytes allocated, bytes autograd saves for backward).

Every provider of a comparison runs in the same process on the same inputs, once per round, in an order rotated
each round, so that a drift of a shared machine hits every provider alike: the ratios of two providers are what
survive, absolute times move with the machine's load. On CUDA the clock waits for the device before reading.

    samples, rounds = interleave({"a": timed(fn_a), "b": timed(fn_b)}, budget_s=5, min_rounds=5, max_rounds=100)
    p20, p50, p80 = percentiles(samples["a"]["full"])
    ratio = statistics.median(paired(samples["a"]["full"], samples["b"]["full"]))
    summary = measure({"a": fn_a, "b": fn_b}, rounds=10)      # name → Summary(p20, p50, p80) in ms
"""
from __future__ import annotations

import gc
import statistics
import time
from collections import defaultdict
from typing import Callable, Dict, Iterable, List, NamedTuple, Sequence, Tuple

import torch

Tensor = torch.Tensor
# A provider runs one call and returns {mode: seconds} (e.g. fwd, bwd and full of one op call).
Provider = Callable[[], Dict[str, float]]


class Summary(NamedTuple):
    """Percentiles of a provider's samples."""

    p20: float
    p50: float
    p80: float


def percentiles(samples: Sequence[float]) -> Summary:
    """p20, p50, p80 (inclusive linear interpolation, as numpy's default)."""
    if len(samples) == 1:
        return Summary(samples[0], samples[0], samples[0])
    q = statistics.quantiles(samples, n=10, method="inclusive")
    return Summary(q[1], statistics.median(samples), q[7])


def clock(device: torch.device | str = "cpu") -> Callable[[], float]:
    """perf_counter, after waiting for the GPU when timing CUDA work."""
    if torch.device(device).type != "cuda":
        return time.perf_counter

    def read() -> float:
        torch.cuda.synchronize()
        return time.perf_counter()
    return read


def timed(fn: Callable[[], object], device: torch.device | str = "cpu") -> Provider:
    """A provider that times one call of fn as mode "full"."""
    now = clock(device)

    def run() -> Dict[str, float]:
        start = now()
        fn()
        return {"full": now() - start}
    return run


def interleave(providers: Dict[str, Provider], budget_s: float, min_rounds: int, max_rounds: int,
               warmup: int = 1) -> Tuple[Dict[str, Dict[str, List[float]]], int]:
    """Run every provider once per round, in an order rotated each round, until the time budget is spent
    (but at least min_rounds, at most max_rounds). Returns (name → mode → seconds per round, rounds).
    warmup=0 is for callers that already ran every provider once."""
    names = list(providers)
    for _ in range(warmup):
        for name in names:
            providers[name]()
    samples: Dict[str, Dict[str, List[float]]] = {n: defaultdict(list) for n in names}
    gc.collect()
    start, rounds = time.perf_counter(), 0
    while rounds < max_rounds and (rounds < min_rounds or time.perf_counter() - start < budget_s):
        shift = rounds % len(names)
        for name in names[shift:] + names[:shift]:
            for mode, seconds in providers[name]().items():
                samples[name][mode].append(seconds)
        rounds += 1
    return samples, rounds


def measure(fns: Dict[str, Callable[[], object]], rounds: int, device: torch.device | str = "cpu",
            warmup: int = 1) -> Dict[str, Summary]:
    """Each function timed in `rounds` interleaved rounds: name → Summary in milliseconds."""
    samples, _ = interleave({n: timed(fn, device) for n, fn in fns.items()}, 0.0, rounds, rounds, warmup)
    return {n: percentiles([s * 1e3 for s in by_mode["full"]]) for n, by_mode in samples.items()}


def repeat(fn: Callable[[], object], rounds: int, warmup: int = 1, device: torch.device | str = "cpu") -> List[float]:
    """Seconds of each of `rounds` calls of fn alone, after `warmup` calls: for a setting that only one process
    can have (an instruction set, an allocator mode), where providers cannot be interleaved."""
    samples, _ = interleave({"fn": timed(fn, device)}, 0.0, rounds, rounds, warmup)
    return samples["fn"]["full"]


def paired(times: Sequence[float], denominators: Sequence[float]) -> List[float]:
    """Per-round ratios: round r's time over the denominator's time in the same round. Calls of one round
    run seconds apart at most, so a load change that lasts longer than a round cancels out of each ratio,
    which the ratio of two medians over the whole run does not do."""
    return [t / d for t, d in zip(times, denominators)]


def peak_bytes(fn: Callable[[], object], device: torch.device | str = "cpu") -> int:
    """Peak bytes allocated while fn runs, above what was allocated before it: torch.cuda's peak statistics
    on a GPU, torch.profiler's allocation events on the CPU."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e for e in prof.profiler.kineto_results.events()
                     if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU),
                    key=lambda e: e.start_ns())
    live = peak = 0
    for e in events:
        live += e.nbytes()
        peak = max(peak, live)
    return peak


def saved_bytes(step: Callable[[], None], resident: Iterable[Tensor] = ()) -> int:
    """Bytes of the distinct storages autograd saves for backward during one step, summed over the step's
    backward passes (centered / Δ-STN run two): the activation memory the step's graphs hold. A storage
    saved by several nodes counts once, and the storages of `resident` tensors (weights, λ, the batch) are
    left out: a backend that saves a reference to a weight (the C++ ops' save_for_backward does) costs no
    memory for it. The hook keeps every saved storage alive until the step ends, so that the allocator
    cannot hand a freed address to a later sub-step's tensor and make two storages look like one (which
    made the number drift by ~20% between runs)."""
    skip = {(str(t.device), t.untyped_storage().data_ptr()) for t in resident}
    seen: Dict[Tuple[str, int], int] = {}
    alive: List[Tensor] = []

    def pack(t: Tensor):
        storage = t.untyped_storage()
        where = (str(t.device), storage.data_ptr())
        if where not in skip and where not in seen:
            seen[where] = storage.nbytes()
            alive.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step()
    alive.clear()
    return sum(seen.values())
