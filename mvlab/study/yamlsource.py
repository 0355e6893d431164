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
    try:
        loader = yaml.SafeLoader(text)  # checks the characters already
    except yaml.YAMLError as exc:
        raise StudyError(f"{source}:{_line_of(exc, text)}: not valid YAML: {_one_line(exc)}") from None
    try:
        node = loader.get_single_node()
        if node is None:
            return Located({}, source, {(): f"{source}:1"})
        where: dict[KeyPath, str] = {(): f"{source}:{node.start_mark.line + 1}"}
        _record_marks(node, (), source, where)
        value = loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise StudyError(f"{source}:{_line_of(exc, text)}: not valid YAML: {_one_line(exc)}") from None
    finally:
        loader.dispose()
    return Located(value, source, where)


def _line_of(exc: yaml.YAMLError, text: str) -> int:
    """The 1-based line of a YAML error: from its mark, or from the character offset a
    ``ReaderError`` (a forbidden control character) carries."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    if mark is not None:
        return mark.line + 1
    position = getattr(exc, "position", None)
    return text.count("\n", 0, position) + 1 if isinstance(position, int) else 1


def _one_line(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.reader.ReaderError):
        return f"character {exc.character!r} is not allowed in YAML; remove it"
    return " ".join(str(getattr(exc, "problem", None) or exc).split())


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
