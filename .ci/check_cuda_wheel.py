"""Checks an installed CUDA wheel of fastdstn (`make cuda-wheel` runs it in a fresh environment, from outside the
repository): the package is the installed one, its version carries the +cu…torch… tag of the torch it runs
beside, the compiled ops load and register CUDA kernels, and both the build record and the library itself name
the GPU architectures that were asked for.

    python check_cuda_wheel.py "8.0;9.0"

No GPU is needed: registration is a dispatcher entry, and cuobjdump (shipped inside Triton) lists the cubins.
"""
import glob
import importlib.metadata
import json
import os
import subprocess
import sys

import torch


def fail(message: str) -> None:
    sys.exit(f"check_cuda_wheel: {message}")


def cubin_architectures(library: str) -> set:
    """The sm_XY of every cubin embedded in `library`, as "X.Y" strings."""
    import triton

    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    listed = subprocess.run([tool, "--list-elf", library], capture_output=True, text=True, check=True).stdout
    # lines like "ELF file    1: _C.1.sm_90.cubin"
    archs = {word.split(".sm_")[1].split(".")[0] for word in listed.split() if ".sm_" in word}
    return {f"{a[:-1]}.{a[-1]}" for a in archs}


def main(expected_archs: str) -> None:
    import fastdstn
    import fastdstn.ops.cpp as cpp

    package = os.path.dirname(fastdstn.__file__)
    if not package.startswith(sys.prefix):
        fail(f"expected fastdstn installed in {sys.prefix}, imported it from {package}")
    version = importlib.metadata.version("fastdstn")
    torch_release = ".".join(torch.__version__.split("+")[0].split(".")[:2])
    tag = f"+cu{torch.version.cuda.replace('.', '')}torch{torch_release}"
    if not version.endswith(tag):
        fail(f"expected the installed version to end in {tag} (CUDA and torch of this environment), received {version}")
    if not cpp.AVAILABLE:
        fail(f"the compiled ops do not load: {cpp.UNAVAILABLE_REASON}")
    if not cpp.cuda_registered():
        fail("the compiled ops loaded without CUDA kernels")
    with open(os.path.join(package, "_build_info.json")) as f:
        record = json.load(f)
    if record.get("cuda_arch_list") != expected_archs:
        fail(f"expected the build record to name TORCH_CUDA_ARCH_LIST={expected_archs!r}, "
             f"received {record.get('cuda_arch_list')!r}")
    library = glob.glob(os.path.join(package, "_C*.so"))[0]
    wanted = {a.replace("+PTX", "") for a in expected_archs.split(";")}
    found = cubin_architectures(library)
    if found != wanted:
        fail(f"expected cubins for {sorted(wanted)} in {library}, cuobjdump lists {sorted(found)}")
    print(f"check_cuda_wheel: fastdstn {version} from {package}: CUDA ops registered, "
          f"record and cubins name {';'.join(sorted(found))}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        fail(f"expected one argument, the TORCH_CUDA_ARCH_LIST the wheel was built with; received {sys.argv[1:]}")
    main(sys.argv[1])
