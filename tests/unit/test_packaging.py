"""Installed, hookcast is one import name: the repository's top-level folders live under it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = {"actors": "hookcast.actors", "cluster": "hookcast.cluster", "cli": "hookcast.cli"}

PROBE = """
import importlib, importlib.util, json, pkgutil, hookcast
names = [m.name for m in pkgutil.walk_packages(hookcast.__path__, "hookcast.")]
names += [m.name for pkg in ("actors", "cluster", "cli")
          for m in pkgutil.walk_packages(importlib.import_module("hookcast." + pkg).__path__,
                                          "hookcast." + pkg + ".")]
print(json.dumps({
    "version": hookcast.__version__,
    "generic": {n: importlib.util.find_spec(n) is not None for n in ("actors", "cluster", "cli")},
    "modules": sorted(set(names)),
}))
"""


def _installed_view(tmp_path: Path) -> dict:
    """What a user's interpreter sees: isolated mode, run outside the checkout."""
    out = subprocess.run(
        [sys.executable, "-I", "-c", PROBE],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)


def test_only_hookcast_is_importable_once_installed(tmp_path: Path) -> None:
    seen = _installed_view(tmp_path)
    assert seen["generic"] == {"actors": False, "cluster": False, "cli": False}
    assert (
        seen["version"]
        == tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    )
    for folder, package in FOLDERS.items():
        on_disk = {
            f"{package}.{p.relative_to(ROOT / folder).with_suffix('').as_posix().replace('/', '.')}"
            for p in (ROOT / folder).rglob("*.py")
            if p.name != "__init__.py"
        }
        missing = on_disk - set(seen["modules"])
        assert not missing, f"modules not installed under {package}: {sorted(missing)}"


def test_every_package_folder_is_mapped_in_pyproject() -> None:
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapped = setuptools["package-dir"]
    assert sorted(setuptools["packages"]) == sorted(mapped)
    for folder, package in FOLDERS.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            sub = init.parent.relative_to(ROOT)
            name = package + "".join(f".{part}" for part in sub.parts[1:])
            assert mapped.get(name) == sub.as_posix(), f"{sub} is not mapped to {name}"
