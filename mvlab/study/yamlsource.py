"""YAML with a location for every key, so a study error can say ``file:line: key``.

PyYAML's node marks carry line numbers; we compose the node tree once, remember where every
mapping key and list item sits, and construct plain Python values from the same tree.

Aliases share nodes, so a few hundred bytes of ``&a [*b, *b, ...]`` describe billions of values
(a "billion laughs" bomb) and ``&d [*d]`` describes an endless one. The tree is measured as it
would expand before anything walks it: more than ``MAX_VALUES`` values, or an alias inside its
own anchor, is a one-line error. The message tells a document that is simply that big (no alias
needed) from one that aliases blow up."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mvlab.errors import StudyError

KeyPath = tuple[Any, ...]
MAX_VALUES = 100_000  # scalars, lists and mappings after alias expansion; a big study has ~500


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
        _check_expansion(node, lambda n: f"{source}:{n.start_mark.line + 1}")
        where: dict[KeyPath, str] = {(): f"{source}:{node.start_mark.line + 1}"}
        _record_marks(node, (), source, where)
        value = loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise StudyError(f"{source}:{_line_of(exc, text)}: not valid YAML: {_one_line(exc)}") from None
    except RecursionError:  # PyYAML composes recursively: thousands of nested [ or {
        raise StudyError(f"{source}: YAML nested too deeply; a study needs a few levels") from None
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
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise StudyError(f"{path}: cannot read the study file ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        line = exc.object[:exc.start].count(b"\n") + 1
        raise StudyError(f"{path}:{line}: not UTF-8 text (byte {exc.object[exc.start]:#04x}); "
                         f"save the study file as UTF-8") from None
    except ValueError:  # a NUL in the path: no file can have that name
        raise StudyError(f"{str(path)!r}: not a file name (it holds a NUL character)") from None
    return load_located(text, str(path))


def load_value(text: str, where: str) -> Any:
    """One YAML value (a ``--set`` right-hand side) with the same expansion limits as a file,
    errors prefixed by ``where``; text that is not YAML stays the string it is."""
    try:
        loader = yaml.SafeLoader(text)
    except yaml.YAMLError:
        return text
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expansion(node, lambda n: where)
        return loader.construct_document(node)
    except yaml.YAMLError:
        return text
    except RecursionError:
        raise StudyError(f"{where}: YAML nested too deeply; a value needs a few levels") from None
    finally:
        loader.dispose()


def _check_expansion(root: yaml.Node, locate: Callable[[yaml.Node], str]) -> None:
    """Raise StudyError when aliases make ``root`` recursive or expand it past ``MAX_VALUES``.

    Each distinct node is sized once (memoised), so a bomb is measured in time linear in its
    text, not in its expansion."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:  # iterative: a deeply nested document must not hit Python's recursion limit
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            open_nodes.discard(key)
            sizes[key] = min(MAX_VALUES + 1, 1 + sum(sizes[id(c)] for c in _children(node)))
            if sizes[key] > MAX_VALUES:
                raise StudyError(_too_many_values(node, locate))
            continue
        if key in sizes:
            continue
        if key in open_nodes:
            raise StudyError(f"{locate(node)}: a YAML alias refers to the "
                             f"value it is inside (&name ... *name): it would never end; remove it")
        open_nodes.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node) if id(child) not in sizes)


def _too_many_values(node: yaml.Node, locate: Callable[[yaml.Node], str]) -> str:
    """The message for a value that expands past ``MAX_VALUES``: aliases are blamed only when
    they are the cause. A value written out at that size (200,000 seeds, say) is too big as it
    stands, and telling its author "aliases" would send them looking for one that is not there.
    (Writing an alias bomb out gives the same count, so the alias message does not suggest it.)"""
    if _distinct_nodes(node, MAX_VALUES + 1) > MAX_VALUES:
        return (f"{locate(node)}: the document has more than {MAX_VALUES:,} values (lists, "
                f"mappings and scalars; this value alone holds that many); a study needs a few "
                f"hundred: shorten it")
    return (f"{locate(node)}: YAML aliases (*name) expand this document past {MAX_VALUES:,} "
            f"values; a study needs a few hundred: repeat fewer or smaller anchored values")


def _distinct_nodes(root: yaml.Node, cap: int) -> int:
    """How many distinct nodes ``root`` holds (each alias target once), counting up to ``cap``:
    what the document holds as written, before aliases repeat anything."""
    seen: set[int] = set()
    stack = [root]
    while stack and len(seen) < cap:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        stack.extend(_children(node))
    return len(seen)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


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
