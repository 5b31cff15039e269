"""Wheels and sdists (docs/WHEELS.md): the torch-version check that guards loading fastdstn._C, and the
whole path a user takes: build the sdist and the CPU wheel from it, install the wheel into a fresh
environment, train, read `fastdstn info`, and meet another torch than the one the wheel was built for.

The end-to-end test builds from a copy of the repository's files (what `git ls-files` lists, plus new
files not yet added), so the working tree's build/ and compiled .so are not reused and nothing is written
into the repository. The fresh environment reuses the installed torch (and the other dependencies) through a
.pth file instead of installing a second 5 GB torch; fastdstn's own editable install is left out of it."""
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import textwrap
import zipfile
from pathlib import Path

import pytest
import torch
import yaml

from fastdstn.ops.cpp import torch_mismatch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "train"))
from tiny_runs import tiny_values  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
VERSION = "0.1.0"  # fastdstn.__version__ of this release; the test checks that the files carry it


# ----------------------------------------------------------------------------- the import check
CPU_BUILD = {"compiled": True, "torch": "2.14.1+cu130", "cuda": None}
CUDA_BUILD = {"compiled": True, "torch": "2.14.1+cu130", "cuda": "13.0"}


def test_same_torch_loads():
    assert torch_mismatch(CPU_BUILD, "2.14.1+cu130", "13.0") == ""
    assert torch_mismatch(CUDA_BUILD, "2.14.1+cu130", "13.0") == ""


def test_cpu_build_loads_beside_another_variant_of_the_same_release():
    assert torch_mismatch(CPU_BUILD, "2.14.1+cpu", None) == ""
    assert torch_mismatch(CPU_BUILD, "2.14.1", "12.8") == ""


def test_pure_python_install_is_not_checked():
    assert torch_mismatch({"compiled": False}, "2.14.1", None) == ""
    assert torch_mismatch({}, "2.14.1", None) == ""


def test_another_torch_release_names_both_and_the_rebuild():
    reason = torch_mismatch(CPU_BUILD, "2.13.0+cpu", None)
    assert "built for torch 2.14.1+cu130 but torch 2.13.0+cpu is installed" in reason
    assert "reference ops run instead" in reason and "pip install --no-build-isolation ." in reason


def test_cuda_build_needs_the_cuda_version_it_was_built_with():
    assert "(CUDA 13.0) but torch 2.14.1+cu128 (CUDA 12.8) is installed" in torch_mismatch(
        CUDA_BUILD, "2.14.1+cu128", "12.8")
    assert "(CUDA 13.0) but torch 2.14.1+cpu (CUDA none) is installed" in torch_mismatch(
        CUDA_BUILD, "2.14.1+cpu", None)


# ----------------------------------------------------------------------------- end to end
def _run(args, cwd, env=None, timeout=900) -> subprocess.CompletedProcess:
    """Run a command; on failure, fail the test with its output (the last part of a long build log)."""
    done = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        output = done.stdout + done.stderr
        pytest.fail(f"{' '.join(map(str, args))} exited with {done.returncode}:\n{output[-6000:]}")
    return done


def _clean_env(**updates) -> dict:
    """This process's environment without what would point Python at the repository or the dev venv."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(updates)
    return env


@pytest.fixture(scope="module")
def source_files() -> list:
    """The repository's files, tracked and new (not ignored): no build/, no .so, no _build_info.json."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, check=True).stdout.decode().split("\0")
    return [name for name in listed if name and (REPO / name).is_file()]  # not those deleted in the working tree


@pytest.fixture(scope="module")
def source_copy(source_files, tmp_path_factory) -> Path:
    """The files copied out of the repository: a build there reuses and writes nothing of the working tree."""
    copy = tmp_path_factory.mktemp("source")
    for name in source_files:
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, copy / name)
    return copy


@pytest.fixture(scope="module")
def built(source_copy, tmp_path_factory) -> dict:
    """`python -m build --no-isolation`: the sdist, then the CPU wheel built from the unpacked sdist."""
    dist = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "build", "--no-isolation", "--outdir", dist, source_copy], cwd=source_copy,
         env=_clean_env(MAX_JOBS="2"))
    sdists, wheels = sorted(dist.glob("*.tar.gz")), sorted(dist.glob("*.whl"))
    assert len(sdists) == 1 and len(wheels) == 1, f"expected one sdist and one wheel in {dist}; found {os.listdir(dist)}"
    return {"sdist": sdists[0], "wheel": wheels[0]}


def _site_packages_without_fastdstn(tmp: Path) -> Path:
    """A folder of links to this interpreter's site-packages entries, less fastdstn's own (the repository's
    editable install: its .pth, finder and dist-info), so that a new environment sees torch and the other
    dependencies but neither imports nor lists (for pip) any fastdstn."""
    links = tmp / "reused-site-packages"
    links.mkdir()
    for site in {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}:
        for entry in Path(site).iterdir():
            if entry.name.startswith(("fastdstn", "__editable__")) or (links / entry.name).exists():
                continue
            (links / entry.name).symlink_to(entry)
    return links


@pytest.fixture(scope="module")
def fresh_env(tmp_path_factory) -> Path:
    """A new virtual environment that imports the installed torch and no fastdstn. It has no pip or setuptools
    of its own: the reused ones run and satisfy the dependencies (torch needs a newer setuptools than the one
    `venv` would bundle)."""
    tmp = tmp_path_factory.mktemp("env")
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=tmp)
    python = venv / "bin" / "python"
    site = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=tmp,
                env=_clean_env()).stdout.strip()
    (Path(site) / "reuse_installed_torch.pth").write_text(f"{_site_packages_without_fastdstn(tmp)}\n")
    probe = "import importlib.util, torch; print(torch.__version__, importlib.util.find_spec('fastdstn'))"
    assert _run([python, "-c", probe], cwd=tmp, env=_clean_env()).stdout.split() == [torch.__version__, "None"]
    return venv


@pytest.mark.slow
def test_sdist_has_everything_the_build_needs(built, source_files):
    assert built["sdist"].name == f"fastdstn-{VERSION}.tar.gz"
    with tarfile.open(built["sdist"]) as sdist:
        names = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    needed = {name for name in source_files if name.startswith(("csrc/", "fastdstn/"))}
    needed |= {"setup.py", "pyproject.toml", "MANIFEST.in", "README.md", "docs/WHEELS.md", "PKG-INFO"}
    assert {"csrc/dense/dense_ops.h", "csrc/dense/dense_cuda.cu", "fastdstn/ops/dense/triton.py",
            "fastdstn/presets/fmnist-quick.toml"} <= needed
    assert needed - names == set(), "missing from the sdist"
    assert not [n for n in names if n.endswith(".so") or n.startswith(("tests/", "build/"))
                or n == "fastdstn/_build_info.json"]


@pytest.mark.slow
def test_wheel_holds_the_compiled_ops_and_the_build_record(built):
    wheel = built["wheel"]
    # A CPU wheel keeps the sdist's plain version (setup.py: package_version).
    assert wheel.name.startswith(f"fastdstn-{VERSION}-cp{sys.version_info.major}{sys.version_info.minor}-")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        record = json.loads(archive.read("fastdstn/_build_info.json"))
    assert [n for n in names if n.startswith("fastdstn/_C.") and n.endswith(".so")]
    assert "fastdstn/ops/dense/triton.py" in names and "fastdstn/presets/fmnist-quick.toml" in names
    assert record["version"] == VERSION and record["compiled"] is True
    assert record["torch"] == torch.__version__ and record["cuda"] is None


@pytest.mark.slow
@pytest.mark.skipif(torch.version.cuda is None, reason="a CUDA build's version needs a CUDA build of torch")
def test_cuda_build_version_names_cuda_and_torch(source_copy, tmp_path):
    work = tmp_path / "source"
    shutil.copytree(source_copy, work)
    version = _run([sys.executable, "setup.py", "--version"], cwd=work,
                   env=_clean_env(FASTDSTN_CUDA="1", TORCH_CUDA_ARCH_LIST="9.0")).stdout.strip()
    torch_release = ".".join(torch.__version__.split("+")[0].split(".")[:2])
    assert version == f"{VERSION}+cu{torch.version.cuda.replace('.', '')}torch{torch_release}"


SMOKE = textwrap.dedent("""
    import sys
    import torch
    import fastdstn
    import fastdstn.ops.cpp as cpp
    assert fastdstn.__file__.startswith(sys.prefix), f"{fastdstn.__file__} is not the installed wheel"
    assert cpp.AVAILABLE, cpp.UNAVAILABLE_REASON
    assert hasattr(torch.ops.fastdstn, "stn_linear_dual")
    print("smoke ok", fastdstn.__file__)
""")

MISMATCH = textwrap.dedent("""
    import sys
    import warnings
    import torch
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import fastdstn.ops.cpp as cpp
        import fastdstn.ops.cpp  # a second import says nothing more
    assert not cpp.AVAILABLE
    assert "fastdstn._C" not in sys.modules, "the extension was loaded beside another torch"
    assert not hasattr(torch.ops.fastdstn, "stn_linear_dual")
    said = [str(w.message) for w in caught if "fastdstn._C" in str(w.message)]
    assert said == ["fastdstn: " + cpp.UNAVAILABLE_REASON], said
    print(cpp.UNAVAILABLE_REASON)
""")


@pytest.mark.slow
def test_wheel_installs_and_runs_in_a_fresh_environment(built, fresh_env, tmp_path):
    python, fastdstn_cmd = fresh_env / "bin" / "python", fresh_env / "bin" / "fastdstn"
    elsewhere = tmp_path / "elsewhere"  # outside the repository: nothing is imported from its tree
    elsewhere.mkdir()
    env = _clean_env()
    # --no-index: no network here; the dependencies are found installed (through the .pth)
    _run([python, "-m", "pip", "install", "--no-index", "--disable-pip-version-check", built["wheel"]],
         cwd=elsewhere, env=env)

    assert "smoke ok" in _run([python, "-c", SMOKE], cwd=elsewhere, env=env).stdout
    config = elsewhere / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_values(train={"epochs": 1})))
    trained = _run([fastdstn_cmd, "train", config, "--out", elsewhere / "run", "--no-progress"], cwd=elsewhere, env=env)
    assert "done in" in trained.stdout
    assert json.loads((elsewhere / "run" / "summary.json").read_text())["steps"] > 0

    info = _run([fastdstn_cmd, "info"], cwd=elsewhere, env=env).stdout
    assert f"fastdstn     {VERSION}" in info and "cpp        available" in info
    assert f"  version: {VERSION}" in info and "  compiled: True" in info and f"  torch: {torch.__version__}" in info

    # The same wheel beside another torch: its record says so before the extension is loaded.
    site = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['platlib'])"], cwd=elsewhere,
                env=env).stdout.strip()
    record_path = Path(site) / "fastdstn" / "_build_info.json"
    record = json.loads(record_path.read_text())
    record_path.write_text(json.dumps({**record, "torch": "2.13.0+cpu"}))
    reason = _run([python, "-c", MISMATCH], cwd=elsewhere, env=env).stdout
    assert f"built for torch 2.13.0+cpu but torch {torch.__version__} is installed" in reason
    assert "pip install --no-build-isolation ." in reason

    info = _run([fastdstn_cmd, "info"], cwd=elsewhere, env=env).stdout
    assert f"cpp        fastdstn._C was built for torch 2.13.0+cpu but torch {torch.__version__}" in info
    # ...and training runs on the reference ops, with the warning said once.
    trained = _run([fastdstn_cmd, "train", config, "--out", elsewhere / "run-reference", "--no-progress"],
                   cwd=elsewhere, env=env)
    assert "done in" in trained.stdout and trained.stderr.count("fastdstn._C was built for torch 2.13.0+cpu") == 1
