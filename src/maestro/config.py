"""Typed configuration: build frozen dataclasses from plain mappings (recipes, CLI, kwargs).

Every configurable thing in maestro (an environment, an algorithm, a run) is a frozen dataclass
whose fields carry docstrings and defaults. ``build_config`` turns a mapping into one, failing with
a ``ConfigError`` that names the offending key, the expected type and the source (a recipe file,
``make_env`` keywords...). Unknown keys are errors, with the closest valid names suggested.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value is unknown or of the wrong type; the message names the key."""


def suggest(name: str, valid: typing.Iterable[str]) -> str:
    """A ``did you mean`` hint for a misspelt name, or an empty string."""
    close = difflib.get_close_matches(name, list(valid), n=3, cutoff=0.6)
    return f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""


# A number written as YAML 1.2 allows and YAML 1.1 (PyYAML's safe_load) reads as a string: 1e-3, 5e5.
_NUMBER = re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)(?:[eE][-+]?[0-9]+)?$")


def _as_number(value: Any) -> Any:
    """``float(value)`` for a numeric string such as ``"1e-3"``; ``value`` unchanged otherwise."""
    if isinstance(value, str) and _NUMBER.match(value.strip()):
        return float(value.replace("_", ""))
    return value


def _type_name(tp: Any) -> str:
    if get_origin(tp) is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str, where: str) -> Any:
    """Check ``value`` against the annotation ``tp``; allow the lossless int -> float widening."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        errors = []
        for arm in get_args(tp):
            if arm is type(None):
                if value is None:
                    return None
                continue
            try:
                return _coerce(value, arm, key, where)
            except ConfigError as err:
                errors.append(err)
        if len(errors) == 1:  # ``X | None`` given something other than None: X's own error says what is wrong
            raise errors[0]
        raise ConfigError(f"{where}: {key!r} expects {_type_name(tp)}, got {value!r} ({type(value).__name__})")
    if origin is Literal:
        if value in get_args(tp):
            return value
        raise ConfigError(f"{where}: {key!r} must be one of {list(get_args(tp))}, got {value!r}")
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: {key!r} expects a list, got {value!r} ({type(value).__name__})")
        args = get_args(tp)
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{key}[{i}]", where) for i, v in enumerate(value))
        if origin is tuple and args:
            if len(args) != len(value):
                raise ConfigError(f"{where}: {key!r} expects {len(args)} items, got {len(value)}")
            return tuple(_coerce(v, a, f"{key}[{i}]", where) for i, (v, a) in enumerate(zip(args, value)))
        inner = args[0] if args else Any
        seq = [_coerce(v, inner, f"{key}[{i}]", where) for i, v in enumerate(value)]
        return tuple(seq) if origin is tuple else seq
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: {key!r} expects a mapping, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: {key!r} expects a mapping of {tp.__name__} fields, got {value!r}")
        return build_config(tp, value, where=where, prefix=f"{key}.")
    if tp is float:
        value = _as_number(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: {key!r} expects a number, got {value!r} ({type(value).__name__})")
        return float(value)
    if tp is int:
        value = _as_number(value)
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{where}: {key!r} expects an integer, got {value!r} ({type(value).__name__})")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: {key!r} expects true or false, got {value!r} ({type(value).__name__})")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: {key!r} expects a string, got {value!r} ({type(value).__name__})")
        return value
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"{where}: {key!r} expects {_type_name(tp)}, got {value!r} ({type(value).__name__})")
    return value


def config_fields(cls: type) -> dict[str, Any]:
    """Field name -> resolved type annotation of a config dataclass."""
    hints = get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init}


def build_config(cls: type[T], values: Mapping[str, Any] | None = None, *, where: str = "config", prefix: str = "") -> T:
    """Build the dataclass ``cls`` from ``values``, validating every key and type.

    Args:
        cls: a dataclass type (usually frozen) whose fields are the valid keys.
        values: the given fields; missing ones take their defaults.
        where: where the values come from, for error messages (a file name, ``make_env('x')``).
        prefix: dotted path of ``cls`` inside a larger config, for error messages.

    Raises:
        ConfigError: on an unknown key (with suggestions), a wrong type, or a value the
            dataclass's own ``__post_init__`` rejects.
    """
    values = dict(values or {})
    fields = config_fields(cls)
    unknown = [k for k in values if k not in fields]
    if unknown:
        k = unknown[0]
        raise ConfigError(
            f"{where}: unknown key {prefix + k!r}{suggest(k, fields)}; valid keys: {', '.join(prefix + f for f in fields)}"
        )
    kwargs = {k: _coerce(v, fields[k], prefix + k, where) for k, v in values.items()}
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as err:
        if isinstance(err, ConfigError):
            raise
        raise ConfigError(f"{where}: {err}") from err


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A config dataclass as plain YAML-able data (tuples become lists)."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(cfg)


def field_docs(cls: type) -> dict[str, str]:
    """Docstrings of a dataclass's fields, read from the attribute docstrings in its source and in its
    base classes' (a field documented again in a subclass takes the subclass's text).

    Used by ``maestro list`` and the CLI help so that the documentation lives in one place.
    """
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__[:-1]):
        docs.update(_own_field_docs(klass))
    return docs


def _own_field_docs(cls: type) -> dict[str, str]:
    """The attribute docstrings written in ``cls``'s own class body."""
    import ast
    import inspect
    import textwrap

    try:
        src = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    tree = ast.parse(src)
    docs: dict[str, str] = {}
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    for node, nxt in zip(body, body[1:]):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(nxt, ast.Expr)
            and isinstance(getattr(nxt, "value", None), ast.Constant)
            and isinstance(nxt.value.value, str)
        ):
            docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs
