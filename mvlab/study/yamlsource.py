"""YAML with a location for every key, so a study error can say ``file:line: key``.

PyYAML's node marks carry line numbers; we compose the node tree once, remember where every
mapping key and list item sits, and construct plain Python values from the same tree."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mvlab.errors import StudyError

KeyPath = tuple[Any, ...]


@dataclass
class Located:
    """Plain values loaded from YAML plus where each key path came from."""

    value: Any
    source: str
    where_by_path: dict[KeyPath, str] = field(default_factory=dict)

    def where(self, path: KeyPath) -> str:
        """``file:line`` (or ``--set ...``) of ``path``, falling back to its closest parent."""
        for cut in range(len(path), -1, -1):
            if path[:cut] in self.where_by_path:
                return self.where_by_path[path[:cut]]
        return self.source


def load_located(text: str, source: str) -> Located:
    """Parse YAML ``text``; ``source`` (a file name) prefixes every location."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return Located({}, source, {(): f"{source}:1"})
        where: dict[KeyPath, str] = {(): f"{source}:{node.start_mark.line + 1}"}
        _record_marks(node, (), source, where)
        value = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else "?"
        raise StudyError(f"{source}:{line}: not valid YAML: {exc.problem or exc}") from None
    finally:
        loader.dispose()
    return Located(value, source, where)


def load_located_file(path: str | Path) -> Located:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise StudyError(f"{path}: cannot read the study file ({exc.strerror})") from None
    return load_located(text, str(path))


def _record_marks(node: yaml.Node, path: KeyPath, source: str, where: dict[KeyPath, str]) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: set[Any] = set()
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node)
            line = key_node.start_mark.line + 1
            if key in seen:
                dotted = ".".join(str(p) for p in (*path, key))
                raise StudyError(f"{source}:{line}: {dotted}: key given twice; keep one")
            seen.add(key)
            where[(*path, key)] = f"{source}:{line}"
            _record_marks(value_node, (*path, key), source, where)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            where[(*path, index)] = f"{source}:{item.start_mark.line + 1}"
            _record_marks(item, (*path, index), source, where)
