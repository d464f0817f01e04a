"""Safe YAML loading that remembers where every value came from.

PyYAML's safe loader silently keeps the last of duplicate keys and forgets line numbers once the
data is built. We compose the node graph ourselves (safe constructors only, no tags that build
objects), refuse duplicate keys, and keep a map from data paths to source positions so validation
errors can name file:line:column.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from scanner.errors import InputError, Problem
from scanner.strictmodel import NotANumber

PathKey = tuple[str | int, ...]
M = TypeVar("M", bound=BaseModel)

MAX_YAML_BYTES = 8 * 1024 * 1024  # inventories and catalogues are text written by people
# Hand-written documents nest a few levels and hold small numbers. Bounds keep hostile ones from reaching Python's
# recursion limit (a 50,000-deep list) or its int-string limit (a 5,001-digit number) as a traceback.
MAX_NESTING = 40  # mappings/sequences inside one another
MAX_INT = 2**63 - 1  # what a 64-bit store column holds
_MAX_INT_TEXT = 40  # characters of an integer's text (digits, sign, underscores, 0x/0o prefix)
_INT_TAG = "tag:yaml.org,2002:int"
_TYPE_TAGS = ("int", "float", "str", "none", "bool")  # union members pydantic names in an error's location
_OPENERS = (yaml.BlockMappingStartToken, yaml.BlockSequenceStartToken, yaml.FlowMappingStartToken,
            yaml.FlowSequenceStartToken)  # fmt: skip
_CLOSERS = (yaml.BlockEndToken, yaml.FlowMappingEndToken, yaml.FlowSequenceEndToken)
# libyaml (C) scans and composes the same tokens, nodes and marks many times faster than PyYAML's Python loader
# (a 200,000-item list: about 1 s instead of 6 s); the Python loader where PyYAML was built without it.
_LOADER: type[yaml.SafeLoader] | type[yaml.CSafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass
class LoadedYaml:
    """Plain data from one YAML file plus the source position of every mapping key and value."""

    file: Path
    data: Any
    positions: dict[PathKey, tuple[int, int]] = field(default_factory=dict)

    def where(self, path: Sequence[str | int]) -> tuple[int | None, int | None]:
        """Best known (line, column) for a data path: the deepest prefix we have a position for."""
        key = tuple(path)
        while key:
            if key in self.positions:
                return self.positions[key]
            key = key[:-1]
        line, column = self.positions.get((), (0, 0))
        return (line or None, column or None)

    def problem(self, path: Sequence[str | int], message: str, hint: str = "") -> Problem:
        line, col = self.where(path)
        return Problem(self.file, line, col, message, hint)


class _Builder:
    """Turns one composed node tree into plain data, checking as it goes: duplicate and merge keys, numbers,
    nesting (MAX_NESTING), and — as a guard behind load_yaml's refusal of anchors — a collection met twice."""

    def __init__(self, out: LoadedYaml, problems: list[Problem]) -> None:
        self.out = out
        self.problems = problems
        self.seen: set[int] = set()
        self.constructor = yaml.constructor.SafeConstructor()

    def build(self, node: yaml.Node, path: PathKey, depth: int = 0) -> Any:
        return _construct(node, path, self.out, self.problems, self, depth)


def _construct(
    node: yaml.Node, path: PathKey, out: LoadedYaml, problems: list[Problem], builder: _Builder, depth: int
) -> Any:
    # A mapping key's own position was recorded by the parent; keep it (errors point at the key).
    out.positions.setdefault(path, (node.start_mark.line + 1, node.start_mark.column + 1))
    if isinstance(node, yaml.ScalarNode):
        if node.tag == _STR_TAG:  # most values: text as written, nothing to resolve
            return node.value
        return _plain_scalar(node, out, problems, builder)
    if id(node) in builder.seen:  # the same collection twice: an alias (refused before composing; kept as a guard)
        raise InputError([_at(out.file, node, "YAML anchors and aliases are not supported", _ALIAS_HINT)])
    builder.seen.add(id(node))
    if depth >= MAX_NESTING:
        raise _too_deep(out.file, node.start_mark)
    if isinstance(node, yaml.MappingNode):
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                problems.append(_at(out.file, key_node, "mapping keys must be plain strings"))
                continue
            key = str(key_node.value)
            if key == "<<":
                problems.append(_at(out.file, key_node, "YAML merge keys (<<) are not supported", "write the keys out"))
                continue
            if key in result:
                problems.append(
                    _at(out.file, key_node, f"duplicate key '{key}'", "each key may appear once in a mapping")
                )
                continue
            out.positions[(*path, key)] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            result[key] = _construct(value_node, (*path, key), out, problems, builder, depth + 1)
        return result
    assert isinstance(node, yaml.SequenceNode)
    return [_construct(item, (*path, i), out, problems, builder, depth + 1) for i, item in enumerate(node.value)]


def _plain_scalar(node: yaml.ScalarNode, out: LoadedYaml, problems: list[Problem], builder: _Builder) -> Any:
    # Resolve the plain scalar with the safe constructor (ints, floats, bools, null, timestamps as str).
    if node.tag == "tag:yaml.org,2002:timestamp":
        return str(node.value)
    if node.tag == _INT_TAG and len(node.value) > _MAX_INT_TEXT:
        problems.append(_at(out.file, node, f"number too long ({len(node.value)} characters)", _INT_HINT))
        return None
    try:
        value = builder.constructor.construct_object(node, deep=True)
    except (yaml.YAMLError, ValueError) as exc:
        problems.append(_at(out.file, node, f"unreadable value: {exc}"))
        return None
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INT:
        problems.append(_at(out.file, node, "number out of range", _INT_HINT))
        return None
    if isinstance(value, float) and not math.isfinite(value):
        problems.append(
            _at(out.file, node, f"'{node.value}' is not a finite number", "write an ordinary number such as 1.5")
        )
        return None
    return value


_INT_HINT = f"write a whole number between {-MAX_INT} and {MAX_INT}, or quote it if it is text"
_ALIAS_HINT = "write the value out where it is used"
_STR_TAG = "tag:yaml.org,2002:str"


def _too_deep(file: Path, mark: yaml.Mark | None) -> InputError:
    return InputError(
        [
            Problem(
                file,
                mark.line + 1 if mark is not None else None,
                mark.column + 1 if mark is not None else None,
                f"nested more than {MAX_NESTING} levels deep",
                "flatten the structure; hcscan's files need only a few levels",
            )
        ]
    )


def _at(file: Path, node: yaml.Node, message: str, hint: str = "") -> Problem:
    return Problem(file, node.start_mark.line + 1, node.start_mark.column + 1, message, hint)


class _NoAliasDumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True


def dump_yaml(data: Any) -> str:
    """YAML text hcscan itself can load again: safe types only, and no anchors/aliases (which load_yaml refuses)."""
    return yaml.dump(data, Dumper=_NoAliasDumper, sort_keys=False, allow_unicode=True)


def yaml_files(paths: Iterable[Path], setting: str) -> list[Path]:
    """The YAML files named by a config setting: files as given, folders expanded (sorted, not recursive)."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file()))
        elif path.is_file():
            files.append(path)
        else:
            raise InputError.single(
                f"{setting} path does not exist", file=path, hint=f"fix `{setting}:` in config.yaml"
            )
    return files


def load_yaml(file: Path, *, text: str | None = None) -> LoadedYaml:
    """Load one YAML document. Raises InputError with file:line:column on any syntax problem."""
    if text is None:
        try:
            if file.stat().st_size > MAX_YAML_BYTES:
                raise InputError.single(f"file is larger than {MAX_YAML_BYTES // 1024 // 1024} MiB", file=file)
            text = file.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise InputError.single("file not found", file=file, hint="check the path in config.yaml") from None
        except UnicodeDecodeError as exc:
            raise InputError.single(
                f"not UTF-8 text ({exc.reason})", file=file, hint="save the file as UTF-8"
            ) from None
        except OSError as exc:
            raise InputError.single(f"cannot read file: {exc.strerror}", file=file) from None
    out = LoadedYaml(file=file, data=None)
    try:
        # One pass over the text (libyaml composes; the checks run on the node tree as it becomes data), except:
        # anchors and aliases are refused before composing — a self-referencing alias would recurse forever and
        # nested aliases ("billion laughs") would exhaust memory; hand-written inventories do not need them. Only
        # a text with an '&' or '*' somewhere can hold one, and only such a text is scanned for them first. PyYAML's
        # Python composer (no libyaml) recurses without a bound, so there every text is scanned for nesting first.
        if _LOADER is yaml.SafeLoader or "&" in text or "*" in text:
            _check_tokens(file, text)
        nodes = list(yaml.compose_all(text, Loader=_LOADER))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        if "maximum nesting depth" in str(exc.problem):  # libyaml's own limit, met while it reads ahead
            raise _too_deep(file, mark) from None
        line = mark.line + 1 if mark is not None else None
        col = mark.column + 1 if mark is not None else None
        msg = f"YAML syntax error: {exc.problem or exc}"
        if exc.context:
            msg += f" ({exc.context})"
        raise InputError(
            [Problem(file, line, col, msg, "check indentation, colons and quoting on that line")]
        ) from None
    except yaml.YAMLError as exc:
        raise InputError.single(f"YAML error: {exc}", file=file) from None
    if len(nodes) > 1:
        raise InputError.single(
            "more than one YAML document ('---') in one file", file=file, hint="use one document per file"
        )
    if not nodes or nodes[0] is None:
        out.data = None
        return out
    problems: list[Problem] = []
    out.data = _Builder(out, problems).build(nodes[0], ())
    if problems:
        raise InputError(problems)
    return out


def _check_tokens(file: Path, text: str) -> None:
    """Refuse anchors and aliases (at the first one) and nesting deeper than MAX_NESTING, from the tokens alone."""
    depth = 0
    for token in yaml.scan(text, Loader=_LOADER):
        if isinstance(token, _OPENERS):
            depth += 1
            if depth > MAX_NESTING:
                raise _too_deep(file, token.start_mark)
        elif isinstance(token, _CLOSERS):
            depth -= 1
        elif isinstance(token, yaml.AliasToken | yaml.AnchorToken):
            kinds, sign = ("aliases", "*") if isinstance(token, yaml.AliasToken) else ("anchors", "&")
            mark = token.start_mark
            raise InputError(
                [
                    Problem(
                        file,
                        mark.line + 1,
                        mark.column + 1,
                        f"YAML {kinds} ({sign}{token.value}) are not supported",
                        _ALIAS_HINT,
                    )
                ]
            )


def validate_model(model: type[M], loaded: LoadedYaml, data: Any = None, base: PathKey = ()) -> M:
    """Validate data against a pydantic model; translate every error to file:line:column."""
    try:
        return model.model_validate(loaded.data if data is None else data)
    except ValidationError as exc:
        raise InputError(problems_from_validation(exc, loaded, base)) from None


def problems_from_validation(exc: ValidationError, loaded: LoadedYaml, base: PathKey = ()) -> list[Problem]:
    problems: list[Problem] = []
    for err in exc.errors(include_url=False):
        loc = (*base, *(p for p in err["loc"] if isinstance(p, str | int)))
        dotted = ".".join(str(p) for p in loc) or "(top level)"
        kind = err["type"]
        refused = err.get("input")
        if isinstance(refused, NotANumber):
            # Reported once per field, however many union members pydantic tried the stand-in against.
            loc = tuple(p for p in loc if p not in _TYPE_TAGS)
            msg = f"{'.'.join(str(p) for p in loc)}: {refused.problem}"
            if any(p.message == msg for p in problems):
                continue
            problems.append(loaded.problem(loc, msg, ""))
            continue
        if kind == "extra_forbidden":
            msg = f"unknown field '{loc[-1]}'"
            hint = "remove it or fix its spelling; `hcscan schema` prints the allowed fields"
        elif kind == "missing":
            msg = f"missing required field '{dotted}'"
            hint = "add it"
        else:
            # pydantic prefixes the message of a validator's ValueError; the message itself is what the user needs.
            msg = f"{dotted}: {err['msg'].removeprefix('Value error, ')}"
            hint = ""
        problems.append(loaded.problem(loc, msg, hint))
    return problems
