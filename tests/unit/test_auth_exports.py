"""The auth package's public surface: its sorted ``__all__``, every name of it importable,
and no module of the package reaching into another's private names."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest

import hookcast.actors.auth as auth

PACKAGE_DIR = Path(auth.__file__).parent


def test_all_is_sorted_and_unique():
    # isort order, as ruff's RUF022 keeps it: CONSTANTS, then Classes, then functions.
    def order(name: str) -> tuple[bool, bool, str]:
        return (not name.isupper(), not name[0].isupper(), name)

    assert len(set(auth.__all__)) == len(auth.__all__)
    assert auth.__all__ == sorted(auth.__all__, key=order)


@pytest.mark.parametrize("name", auth.__all__)
def test_every_exported_name_imports(name):
    namespace: dict[str, object] = {}
    exec(f"from hookcast.actors.auth import {name}", namespace)
    assert namespace[name] is getattr(auth, name)


@pytest.mark.parametrize("module", sorted(p.name for p in PACKAGE_DIR.glob("*.py")))
def test_no_module_imports_a_private_name(module):
    tree = ast.parse((PACKAGE_DIR / module).read_text(encoding="utf-8"))
    private = [
        f"{node.module}.{alias.name}"
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
        if alias.name.startswith("_")
    ]
    assert private == []


def test_cluster_tokens_uses_only_public_auth_names():
    spec = importlib.util.find_spec("hookcast.cluster.tokens")
    assert spec is not None and spec.origin is not None
    source = Path(spec.origin)
    tree = ast.parse(source.read_text(encoding="utf-8"))
    names = [
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("hookcast.actors")
        for alias in node.names
    ]
    assert names and not any(name.startswith("_") for name in names)
