"""Optional dependencies, installed as extras of the package (pyproject.toml): `data` for the built-in data
sets' offline sources, `tune` for the Optuna baselines, `lightning` and `huggingface` for the integrations.
What needs one imports it through `require`, so that its absence is one line naming the extra to install."""
from __future__ import annotations

import importlib
from types import ModuleType


class MissingExtra(ModuleNotFoundError):
    """An optional dependency that is not installed; the message names the pip command that installs it."""


def require(module: str, extra: str, needed_by: str) -> ModuleType:
    """The module, or MissingExtra naming `fastdstn[extra]`. needed_by: what asked for it (a command, a data set)."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise MissingExtra(f"{needed_by} needs the Python package {module!r}, which is not installed: "
                           f"pip install 'fastdstn[{extra}]'", name=module) from err
