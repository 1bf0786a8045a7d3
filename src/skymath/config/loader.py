"""YAML loading with line numbers, dotted `-o key=value` overrides, and one-line validation errors.

Every error names the file, the key path and the problem (plus the closest valid key for a
typo) and is raised as UserError, which the CLI prints without a traceback and exit code 2.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from skymath.errors import UserError

M = TypeVar("M", bound=BaseModel)


class _LineLoader(yaml.SafeLoader):
    """SafeLoader that remembers the line of every mapping key (for error messages)."""


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    mapping = yaml.SafeLoader.construct_mapping(loader, node, deep=deep)
    lines = {}
    for key_node, _ in node.value:
        lines[key_node.value] = key_node.start_mark.line + 1
    mapping = _LineDict(mapping)
    mapping.key_lines = lines
    return mapping


class _LineDict(dict):
    key_lines: dict[str, int]


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; a missing file or malformed YAML is a UserError naming file and line."""
    p = Path(path)
    if p.is_dir():
        raise UserError(f"{p}: is a directory, expected a YAML config file")
    if not p.is_file():
        raise UserError(f"{p}: config file not found")
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise UserError(f"{p}: cannot read the config file: {e.strerror or e}") from None
    nul = raw.find(b"\0")
    if nul >= 0:
        raise UserError(f"{p}: not a YAML text file (binary data at byte {nul})")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise UserError(f"{p}:{line}: not a YAML text file (invalid UTF-8 at byte {e.start})") from None
    try:
        data = yaml.load(text, Loader=_LineLoader)  # noqa: S506 (SafeLoader subclass)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = f":{mark.line + 1}" if mark else ""
        raise UserError(f"{p}{line}: malformed YAML: {e.problem or e.context}") from None
    except yaml.YAMLError as e:
        raise UserError(f"{p}: malformed YAML: {e}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"{p}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b.c=value` -> (['a','b','c'], value parsed as YAML scalar/flow)."""
    if "=" not in text:
        raise UserError(f"override {text!r}: expected KEY=VALUE (e.g. stages.synth.num_shards=64)")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise UserError(f"override {text!r}: empty key path")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set each dotted key in a nested dict (creating mappings as needed); returns data."""
    for text in overrides:
        parts, value = parse_override(text)
        node = data
        for part in parts[:-1]:
            nxt = node.get(part)
            if nxt is None:
                nxt = {}
                node[part] = nxt
            if not isinstance(nxt, dict):
                raise UserError(f"override {text!r}: {part!r} is not a mapping")
            node = nxt
        node[parts[-1]] = value
    return data


def _line_of(data: Any, loc: tuple) -> int | None:
    line = None
    node = data
    for part in loc:
        if isinstance(node, dict):
            lines = getattr(node, "key_lines", {})
            if part in lines:
                line = lines[part]
            node = node.get(part) if isinstance(part, str) else None
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            break
    return line


def _valid_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    """The field names valid at the parent of loc (walking nested models and dict values)."""
    import typing

    current: Any = model
    skip_key = False
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        if skip_key:  # a key of a dict[str, Model] field
            skip_key = False
            continue
        fields = getattr(current, "model_fields", None)
        if not fields or part not in fields:
            return []
        ann = fields[part].annotation
        skip_key = typing.get_origin(ann) is dict
        current = _model_of(ann)
    fields = getattr(current, "model_fields", None)
    return list(fields) if fields else []


def _model_of(annotation: Any) -> Any:
    import typing

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        m = _model_of(arg)
        if m is not None:
            return m
    return None


def format_validation_error(
    err: ValidationError,
    source: str,
    data: Any = None,
    model: type[BaseModel] | None = None,
    prefix: tuple = (),
) -> str:
    """First error as 'file:line: key.path: problem (did you mean ...?)'."""
    e = err.errors()[0]
    loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and p.startswith("function-")))
    full = prefix + loc
    key = ".".join(str(p) for p in full) or "<top level>"
    line = _line_of(data, full) if data is not None else None
    where = f"{source}:{line}" if line else source
    msg = e["msg"]
    if e["type"] == "extra_forbidden":
        msg = "unknown key"
        if model is not None and loc:
            close = difflib.get_close_matches(str(loc[-1]), _valid_keys(model, loc), n=1, cutoff=0.5)
            if close:
                msg += f" (did you mean {close[0]!r}?)"
    elif e["type"] == "missing":
        msg = "required key is missing"
    elif "input" in e and not isinstance(e["input"], (dict, list)):
        msg += f" (got {e['input']!r})"
    more = len(err.errors()) - 1
    tail = f" [+{more} more error{'s' if more > 1 else ''}]" if more > 0 else ""
    return f"{where}: {key}: {msg}{tail}"


def validate(model: type[M], data: Any, source: str, prefix: tuple = (), root: Any = None) -> M:
    """model.model_validate(data) with errors turned into a one-line UserError."""
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise UserError(
            format_validation_error(err, source, root if root is not None else data, model if not prefix else model, prefix)
        ) from None


def load_model(path: str | Path, model: type[M], overrides: list[str] | None = None) -> M:
    """Read YAML, apply overrides, validate into `model`."""
    data = read_yaml(path)
    if overrides:
        apply_overrides(data, overrides)
    return validate(model, data, str(path))
