"""YAML read safely: a bounded expansion through aliases, and no key given twice.

``safe_load`` is ``yaml.safe_load`` for job and --auth files, plus two checks made on the
composed node graph before any Python object is built: an alias bomb ("billion laughs") is
rejected in time linear in the file's size, and a duplicated key (YAML would keep the last
one silently) is named with both of its lines.
"""

from __future__ import annotations

from typing import Any

import yaml

from hookcast.actors.errors import JobFileError

MAX_EXPANDED_VALUES = 100_000


def safe_load(text: str, source_name: str) -> Any:
    """The document in ``text`` (None when empty). Raises ``yaml.YAMLError`` for a syntax
    error, ``JobFileError`` naming ``source_name`` for a bomb or a duplicated key."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expansion(node, source_name)
        _check_duplicates(node, source_name)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _check_expansion(root: yaml.Node, source_name: str) -> None:
    """Count the values the document expands to, each shared node once (memoised)."""
    sizes: dict[int, int] = {}
    in_progress: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in in_progress:
            raise JobFileError(
                f"{source_name}: a YAML alias at line {node.start_mark.line + 1} refers to a "
                "node that contains it: a job file cannot be recursive; write the value out.",
                (("", "recursive YAML alias"),),
            )
        in_progress.add(key)
        total = 1
        if isinstance(node, yaml.SequenceNode):
            total += sum(size(child) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            total += sum(size(k) + size(v) for k, v in node.value)
        in_progress.discard(key)
        if total > MAX_EXPANDED_VALUES:
            message = (
                f"{source_name} expands to more than {MAX_EXPANDED_VALUES:,} values through "
                "YAML aliases (*name): a job file is far smaller; write the repeated parts "
                "out, or repeat only small ones."
            )
            raise JobFileError(message, (("", message),))
        sizes[key] = total
        return total

    size(root)


def _check_duplicates(root: yaml.Node, source_name: str) -> None:
    problems: list[tuple[str, str]] = []
    seen: set[int] = set()

    def walk(node: yaml.Node, path: str) -> None:
        if id(node) in seen:
            return
        seen.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            for index, child in enumerate(node.value):
                walk(child, f"{path}[{index}]")
        elif isinstance(node, yaml.MappingNode):
            firsts: dict[tuple[str, str], yaml.Node] = {}
            for key, value in node.value:
                child = path
                if isinstance(key, yaml.ScalarNode) and key.tag != _MERGE:
                    child = f"{path}.{key.value}" if path else str(key.value)
                    first = firsts.setdefault((key.tag, key.value), key)
                    if first is not key:
                        problems.append((child, _twice(child, first, key)))
                walk(value, child)

    walk(root, "")
    if problems:
        bullets = "\n".join(f"- {message}" for _, message in problems)
        raise JobFileError(f"{source_name} repeats a key:\n{bullets}", tuple(problems))


_MERGE = "tag:yaml.org,2002:merge"


def _twice(key: str, first: yaml.Node, again: yaml.Node) -> str:
    lines = f"line {first.start_mark.line + 1} and at line {again.start_mark.line + 1}"
    return (
        f"{key} is given twice, at {lines}: keep one of them (YAML would silently keep the last)."
    )
