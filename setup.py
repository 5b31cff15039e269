"""Build fastdstn: the Python package, the Triton kernels (kernels/ → fastdstn.kernels) and the
compiled ops (csrc/ → fastdstn._C).

Switches (environment):
  FASTDSTN_NO_EXTENSIONS=1   pure-Python install, no compiled ops
  FASTDSTN_CUDA=1            also compile csrc/cuda/*.cu (so does a set TORCH_CUDA_ARCH_LIST);
                             never decided by whether a GPU is visible
  TORCH_CUDA_ARCH_LIST       CUDA architectures, e.g. "8.0;9.0" (default "8.0;9.0" with FASTDSTN_CUDA=1)
  MAX_JOBS                   parallel compile jobs (torch's BuildExtension reads it)
Build metadata (torch/CUDA versions, architectures, flags) goes to fastdstn/_build_info.json.
"""
import glob
import json
import os

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def _flag(name: str) -> bool:
    return os.environ.get(name, "0").lower() in ("1", "true", "yes", "on")


def extensions():
    """The compiled-ops extension and the build metadata it was made with (or none of either)."""
    cpp_sources = sorted(glob.glob(os.path.join("csrc", "*.cpp")))
    if _flag("FASTDSTN_NO_EXTENSIONS") or not cpp_sources:
        return [], {}, {"compiled": False}
    import torch
    from torch.utils import cpp_extension

    with_cuda = _flag("FASTDSTN_CUDA") or bool(os.environ.get("TORCH_CUDA_ARCH_LIST"))
    cxx_flags = ["-O3", "-fopenmp", "-std=c++20"]  # torch 2.14 headers require C++20
    info = {"compiled": True, "torch": torch.__version__, "cuda": None, "cuda_arch_list": None,
            "cxx_flags": cxx_flags, "nvcc_flags": None}
    if with_cuda:
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0")
        os.environ.setdefault("CUDA_HOME", "/usr/local/cuda")
        nvcc_flags = ["-O3", "-std=c++20", "--use_fast_math", "-Xptxas=-v", "-lineinfo"]
        cu_sources = sorted(glob.glob(os.path.join("csrc", "cuda", "*.cu")))
        extension = cpp_extension.CUDAExtension(
            "fastdstn._C", cpp_sources + cu_sources,
            define_macros=[("FASTDSTN_WITH_CUDA", "1")],
            extra_compile_args={"cxx": cxx_flags, "nvcc": nvcc_flags}, extra_link_args=["-fopenmp"])
        info.update(cuda=torch.version.cuda, cuda_arch_list=os.environ["TORCH_CUDA_ARCH_LIST"], nvcc_flags=nvcc_flags)
    else:
        extension = cpp_extension.CppExtension("fastdstn._C", cpp_sources,
                                               extra_compile_args={"cxx": cxx_flags}, extra_link_args=["-fopenmp"])
    return [extension], {"build_ext": cpp_extension.BuildExtension}, info


ext_modules, cmdclass, build_info = extensions()
with open(os.path.join(HERE, "fastdstn", "_build_info.json"), "w") as f:
    json.dump(build_info, f, indent=2)

setup(
    packages=find_packages(include=["fastdstn", "fastdstn.*"]) + ["fastdstn.kernels"],
    package_dir={"fastdstn.kernels": "kernels"},
    package_data={"fastdstn": ["_build_info.json", "presets/*.toml"]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
