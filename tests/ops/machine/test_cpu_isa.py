"""The compiled CPU loops' instruction sets: the baseline, AVX2 and AVX-512 copies agree on fixed inputs, and the
wide instructions appear only in their own copies (machine-specific: what the CPU and the compiler give)."""
import os

import pytest
import torch

from fastdstn.ops import cpp
from op_cases import needs_cpp


@needs_cpp
def test_cpu_instruction_sets_agree(tmp_path):
    """The CPU loops exist for the x86-64 baseline, AVX2 and AVX-512 (csrc/common/isa.cpp picks the widest the
    CPU has; FASTDSTN_CPU_ISA caps it). Every copy gives the float64 results of the others up to rounding
    (FMA contraction differs) and bit-identical dropout masks (per-example and attention dropout)."""
    import subprocess
    import sys

    script = os.path.join(os.path.dirname(__file__), "isa_outputs.py")
    results = {}
    for isa in ("baseline", "avx2", "widest"):
        path = tmp_path / f"{isa}.pt"
        env = dict(os.environ, FASTDSTN_CPU_ISA=isa)
        subprocess.run([sys.executable, script, str(path)], check=True, env=env, timeout=300)
        saved = torch.load(path)
        assert saved["isa"] in ("baseline", "avx2", "avx512")
        if isa == "baseline":
            assert saved["isa"] == "baseline"
        if isa == "widest" and "FASTDSTN_CPU_ISA" not in os.environ:
            assert saved["isa"] == cpp.CPU_ISA  # what this process, uncapped, runs
        results[isa] = saved["outputs"]
    for isa in ("avx2", "widest"):
        for name, tensors in results["baseline"].items():
            for k, (a, b) in enumerate(zip(tensors, results[isa][name])):
                if name in ("dropout", "attention_keep_mask"):
                    assert torch.equal(a, b), f"{isa}: {name} {k} differs from the baseline loops'"
                else:
                    torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12, msg=f"{isa}: {name} output/grad {k}")


@needs_cpp
def test_wide_instructions_only_in_their_builds():
    """No AVX/AVX-512 instruction (VEX/EVEX-encoded, mnemonic v…) outside the isa_avx2/isa_avx512 copies of the
    CPU loops: templates of ATen and the standard library instantiated by those copies must keep the baseline
    target, or the linker could hand a baseline caller an AVX-512 body (an illegal instruction on older CPUs)."""
    import glob
    import platform
    import shutil
    import subprocess

    if shutil.which("objdump") is None:
        pytest.skip("objdump (binutils) is not installed")
    library = glob.glob(os.path.join(os.path.dirname(cpp.__file__), os.pardir, "_C*.so"))
    if not library:
        pytest.skip("no compiled extension")
    listing = subprocess.run(["objdump", "-d", "--no-show-raw-insn", "-C", library[0]], capture_output=True,
                             text=True, check=True, timeout=300).stdout
    offenders, function, inside = set(), "", 0
    for line in listing.splitlines():
        if line.endswith(">:"):
            function = line
        else:
            fields = line.split("\t")
            if len(fields) >= 2 and fields[1].startswith("v") and not fields[1].startswith(("verr", "verw")):
                if "isa_avx2" in function or "isa_avx512" in function:
                    inside += 1
                else:
                    offenders.add(function)
    assert not offenders, f"wide instructions outside the ISA builds: {sorted(offenders)[:5]}"
    if platform.machine() == "x86_64":
        assert inside > 0, "the listing shows no wide instruction at all: the AVX2/AVX-512 builds are missing"
