"""Build fastdstn: the Python package (the Triton kernels included, in fastdstn/ops/<family>/) and the
compiled ops (csrc/ → fastdstn._C).

Switches (environment):
  FASTDSTN_NO_EXTENSIONS=1   pure-Python install, no compiled ops
  FASTDSTN_CUDA=1            also compile csrc/<family>/*.cu (so does a set TORCH_CUDA_ARCH_LIST);
                             never decided by whether a GPU is visible
  TORCH_CUDA_ARCH_LIST       CUDA architectures, e.g. "8.0;9.0" (default "8.0;9.0" with FASTDSTN_CUDA=1)
  MAX_JOBS                   parallel compile jobs (torch's BuildExtension reads it)
Build metadata (package version, torch/CUDA versions, architectures, flags) goes to fastdstn/_build_info.json.
Wheels and sdists: docs/WHEELS.md.
"""
import glob
import json
import os
import re
import sys

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))
# An sdist only collects the sources (MANIFEST.in): it compiles nothing, needs no torch and records no build.
BUILDING_SDIST = "sdist" in sys.argv[1:]


def _flag(name: str) -> bool:
    return os.environ.get(name, "0").lower() in ("1", "true", "yes", "on")


def release_version() -> str:
    """fastdstn.__version__, read from the source so that the package is not imported to build itself."""
    path = os.path.join(HERE, "fastdstn", "__init__.py")
    with open(path) as f:
        match = re.search(r'^__version__ = "([^"]+)"$', f.read(), re.MULTILINE)
    if match is None:
        raise RuntimeError(f"setup.py: expected a line `__version__ = \"X.Y.Z\"` in {path}; found none")
    return match.group(1)


def package_version(cuda: str, torch_version: str) -> str:
    """The release version, with a local tag naming the CUDA and torch versions for a CUDA build
    (0.1.0+cu130torch2.14), so that one release's wheels for different clusters are told apart.

    CPU builds and sdists keep the plain version, so that a wheel built from the sdist has the sdist's
    version: pip rejects a wheel built from an index's sdist whose version differs from the one in the
    sdist's file name. A CUDA build is a deliberate variant made from a source tree or a local sdist file."""
    torch_release = ".".join(torch_version.split("+")[0].split(".")[:2])
    return f"{release_version()}+cu{cuda.replace('.', '')}torch{torch_release}"


def extensions():
    """The compiled-ops extension and the build metadata it was made with (or none of either)."""
    # csrc/common/ and one folder per op family (csrc/dense/, csrc/lstm_cell/, csrc/dropout/, csrc/attention/:
    # CPU only, no .cu file).
    cpp_sources = sorted(glob.glob(os.path.join("csrc", "*", "*.cpp")))
    if _flag("FASTDSTN_NO_EXTENSIONS") or not cpp_sources:
        return [], {}, {"version": release_version(), "compiled": False}
    with_cuda = _flag("FASTDSTN_CUDA") or bool(os.environ.get("TORCH_CUDA_ARCH_LIST"))
    if with_cuda:
        # Before torch.utils.cpp_extension is imported: it fixes CUDA_HOME at import, guessing /usr/local from
        # an nvcc in /usr/local/bin (then the link fails: cannot find -lcudart).
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0")
        os.environ.setdefault("CUDA_HOME", "/usr/local/cuda")
    import torch
    from torch.utils import cpp_extension

    cxx_flags = ["-O3", "-fopenmp", "-std=c++20"]  # torch 2.14 headers require C++20
    info = {"version": release_version(), "compiled": True, "torch": torch.__version__, "cuda": None,
            "cuda_arch_list": None, "cxx_flags": cxx_flags, "nvcc_flags": None}
    if with_cuda:
        if torch.version.cuda is None:
            raise RuntimeError(f"setup.py: FASTDSTN_CUDA=1 or TORCH_CUDA_ARCH_LIST asks for the CUDA ops, which need a "
                               f"CUDA build of torch; received torch {torch.__version__} (CPU only)")
        nvcc_flags = ["-O3", "-std=c++20", "--use_fast_math", "-Xptxas=-v", "-lineinfo"]
        cu_sources = sorted(glob.glob(os.path.join("csrc", "*", "*.cu")))
        extension = cpp_extension.CUDAExtension(
            "fastdstn._C", cpp_sources + cu_sources,
            define_macros=[("FASTDSTN_WITH_CUDA", "1")],
            extra_compile_args={"cxx": cxx_flags, "nvcc": nvcc_flags}, extra_link_args=["-fopenmp"])
        info.update(version=package_version(torch.version.cuda, torch.__version__), cuda=torch.version.cuda,
                    cuda_arch_list=os.environ["TORCH_CUDA_ARCH_LIST"], nvcc_flags=nvcc_flags)
    else:
        extension = cpp_extension.CppExtension("fastdstn._C", cpp_sources,
                                               extra_compile_args={"cxx": cxx_flags}, extra_link_args=["-fopenmp"])
    return [extension], {"build_ext": cpp_extension.BuildExtension}, info


if BUILDING_SDIST:
    ext_modules, cmdclass, version = [], {}, release_version()
else:
    ext_modules, cmdclass, build_info = extensions()
    version = build_info["version"]
    with open(os.path.join(HERE, "fastdstn", "_build_info.json"), "w") as f:
        json.dump(build_info, f, indent=2)

setup(
    version=version,
    packages=find_packages(include=["fastdstn", "fastdstn.*"]),
    package_data={"fastdstn": ["_build_info.json", "presets/*.toml"]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
