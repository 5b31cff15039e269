"""Compile every Triton kernel for real GPUs without one: register, spill and shared-memory report.

The interpreter (how CI runs the kernels on CPU) checks the arithmetic but not whether a kernel compiles
for an SM, nor whether its tile fits the register file. Triton compiles to a cubin with its bundled
ptxas without any GPU present, and cuobjdump (also bundled) reads the resource usage back:

    python -m fastdstn.ops.compile_check                # pinned configs, sm_80 and sm_90
    python -m fastdstn.ops.compile_check --all-configs  # every autotune config (minutes)

REG is registers per thread (255 is the ceiling), STACK > 0 means spills to local memory, SHARED is the
static shared memory; the dynamic (pipelined tile) shared memory is reported by Triton as `shared`.
It must run without TRITON_INTERPRET (it re-executes itself without it).
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from typing import Dict, Iterator, List, Tuple


def _variants(all_configs: bool, dtypes=("fp32", "bf16")) -> Iterator[Tuple[str, object, Dict[str, object], Dict[str, str], dict]]:
    """(label, kernel, constexprs, pointer dtypes, launch options) for each compile."""
    import triton.language as tl

    from . import triton_config as _config
    from .attention import triton as attention
    from .dense import triton as linear
    from .dense import triton_conv as conv
    from .dropout import triton as dropout
    from .lstm_cell import triton as lstm_cell

    def configs(kind):
        return _config.gemm_configs(kind, every=True) if all_configs else [_config._config(_config.PINNED_GPU[kind])]

    def tag(c):
        return "{BLOCK_M}x{BLOCK_N}x{BLOCK_K}".format(**c.kwargs) + f" w{c.num_warps} s{c.num_stages}"

    for dtype in dtypes:
        precision = "tf32" if dtype == "fp32" else "ieee"
        for kind, flags in (("fwd", dict(HAS_XT=True, NONLINEAR=False, CONV=False)),
                            ("fwd", dict(HAS_XT=False, NONLINEAR=True, CONV=False)),
                            ("conv", dict(HAS_XT=True, NONLINEAR=False, CONV=True))):
            name = "stn_fwd " + ("conv dual" if flags["CONV"] else "nonlinear" if flags["NONLINEAR"] else "dual")
            for c in configs(kind):
                yield (f"{name} {dtype} {tag(c)}", linear._stn_fwd_kernel,
                       dict(HAS_BG=True, HAS_BR=True, SAVE_U=True, PRECISION=precision, ACC=tl.float32, **flags,
                            **c.kwargs), {"*": dtype}, dict(num_warps=c.num_warps, num_stages=c.num_stages))
        for c in configs("bwd"):
            opts = dict(num_warps=c.num_warps, num_stages=c.num_stages)
            bw = dict(PRECISION=precision, ACC=tl.float32, **c.kwargs)
            yield (f"bwd_dx {dtype} {tag(c)}", linear._stn_bwd_dx_kernel, dict(bw, NEED_DX=True, NEED_DXT=True),
                   {"*": dtype}, opts)
            yield (f"bwd_dw {dtype} {tag(c)}", linear._stn_bwd_dw_kernel,
                   dict(bw, HAS_XT=True, NEED_DWG=True, NEED_DWR=True), {"*": dtype}, opts)
        f32 = {"dbg_ptr": "fp32", "dbr_ptr": "fp32", "dv_ptr": "fp32", "deps_ptr": "fp32"}
        yield (f"bwd_rows {dtype} 64x64 w{linear.ROWS_WARPS}", linear._stn_bwd_rows_kernel,
               dict(HAS_BR=True, NEED_G=True, NEED_DBG=True, NEED_DBR=True, NEED_DST=True, NEED_COL=True,
                    NEED_DV=True, NEED_DEPS=True, ACC=tl.float32, BLOCK_M=64, BLOCK_N=64),
               dict(f32, **{"*": dtype}), dict(num_warps=linear.ROWS_WARPS, num_stages=2))
        yield (f"conv_bwd_planes {dtype}", conv._conv_bwd_planes_kernel,
               dict(NEED_G=True, NEED_DS=True, NEED_DSUM=True, NEED_DYSUM=True, ACC=tl.float32, HP=8,
                    BLOCK=conv.PLANE_BLOCK), {"*": dtype, "ds_ptr": "fp32", "dsum_ptr": "fp32", "dysum_ptr": "fp32"},
               dict(num_warps=4, num_stages=2))
        yield (f"dropout_dual {dtype}", dropout._dropout_dual_kernel,
               dict(HAS_XT=True, BATCH=0, BLOCK=_config.POINTWISE_BLOCK), {"*": dtype, "rate_ptr": "fp32"},
               dict(num_warps=4, num_stages=2))
        yield (f"lstm_cell_dual {dtype}", lstm_cell._lstm_cell_dual_kernel,
               dict(HAS_GT=True, HAS_CT=True, BLOCK=_config.POINTWISE_BLOCK), {"*": dtype},
               dict(num_warps=4, num_stages=2))
        yield (f"lstm_cell_dual_bwd {dtype}", lstm_cell._lstm_cell_dual_bwd_kernel,
               dict(HAS_GT=True, HAS_CT=True, NEED_DG=True, NEED_DGT=True, NEED_DC=True, NEED_DCT=True,
                    BLOCK=_config.POINTWISE_BLOCK), {"*": dtype},
               dict(num_warps=lstm_cell.LSTM_BWD_WARPS, num_stages=2))
        yield from attention.compile_variants(dtype, all_configs)


def _signature(kernel, constexprs: Dict[str, object], pointers: Dict[str, str]) -> Dict[str, str]:
    sig = {}
    for name in kernel.arg_names:
        if name in constexprs:
            sig[name] = "constexpr"
        elif name.endswith("_ptr"):
            sig[name] = "*" + pointers.get(name, pointers["*"])
        elif name == "seed":
            sig[name] = "i64"
        elif name == "scale":
            sig[name] = "fp32"
        else:
            sig[name] = "i32"
    return sig


def _resources(cubin: bytes) -> str:
    import triton
    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as f:
        f.write(cubin)
    try:
        text = subprocess.run([tool, "--dump-resource-usage", f.name], capture_output=True, text=True).stdout
    finally:
        os.unlink(f.name)
    m = re.search(r"REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)", text)
    return "REG {} STACK {} SHARED {} LOCAL {}".format(*m.groups()) if m else text.strip()


def run(archs: List[int], all_configs: bool, only: str = "", dtypes=("fp32", "bf16"),
        fail_on_spill: bool = False) -> int:
    """Compile and report; returns the number of failures (compile errors, and spills if asked)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    failures = 0
    for arch in archs:
        for label, kernel, constexprs, pointers, opts in _variants(all_configs, dtypes):
            if only not in label:
                continue
            sig = _signature(kernel, constexprs, pointers)
            # What the launcher's specialization sees at the benchmark shapes: 16-byte aligned pointers
            # (every torch allocation) and matrix dims divisible by 16 (1024, 784, 1200, 256).
            aligned = {(i,): [["tt.divisibility", 16]] for i, n in enumerate(kernel.arg_names)
                       if n.endswith("_ptr") or n in ("M", "N", "K")}
            src = ASTSource(fn=kernel, signature=sig, attrs=aligned,
                            constexprs={(kernel.arg_names.index(k),): v for k, v in constexprs.items()})
            try:
                out = triton.compile(src, target=GPUTarget("cuda", arch, 32), options=opts)
            except Exception as error:  # noqa: BLE001 - report every kernel, then fail
                failures += 1
                print(f"sm_{arch} {label}: FAILED {type(error).__name__}: {str(error).splitlines()[0][:200]}",
                      flush=True)
                continue
            usage = _resources(out.asm["cubin"])
            spill = " SPILLS" if re.search(r"STACK [1-9]|LOCAL [1-9]", usage) else ""
            failures += bool(spill and fail_on_spill)
            print(f"sm_{arch} {label}: {usage} dynamic-shared {out.metadata.shared}{spill}", flush=True)
    return failures


def main() -> None:
    parser = argparse.ArgumentParser(description="compile fastdstn's Triton kernels for GPUs, no GPU needed")
    parser.add_argument("--arch", type=int, nargs="+", default=[80, 90], help="SM versions (default 80 90)")
    parser.add_argument("--all-configs", action="store_true", help="every autotune config, not just the pinned")
    parser.add_argument("--only", default="", help="compile only the variants whose label contains this")
    parser.add_argument("--dtype", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16", "fp16"],
                        help="storage dtypes to compile for (default fp32 bf16)")
    parser.add_argument("--fail-on-spill", action="store_true", help="exit 1 when a kernel spills registers")
    args = parser.parse_args()
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        env = dict(os.environ)
        env.pop("TRITON_INTERPRET")
        sys.exit(subprocess.call([sys.executable, "-m", "fastdstn.ops.compile_check", *sys.argv[1:]], env=env))
    sys.exit(1 if run(args.arch, args.all_configs, args.only, args.dtype, args.fail_on_spill) else 0)


if __name__ == "__main__":
    main()
