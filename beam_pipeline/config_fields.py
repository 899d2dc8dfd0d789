"""The fields of a config dataclass as options: name, type, default, help, YAML checks.

A config dataclass (``DedupConfig``, ``ClusterConfig``, ``PipelineConfig``) may carry a class
attribute ``OPTIONS`` mapping a field name to an :class:`Option` (its help line, metavar,
choices, and an option name when the field's own would be ambiguous: ``ClusterConfig.seed``
is ``cluster_seed``). :func:`config_fields` reads the dataclass fields (their types from the
annotations) together with that table into :class:`ConfigField` records; a field missing from
the table is still an option, named after the field. ``beam_pipeline.options`` turns the
records into Beam ``PipelineOptions`` and command-line flags; :func:`coerce` checks a YAML
value against the field's type. No Beam import here: ``beam_pipeline.config`` uses it.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from dataclasses import dataclass
from typing import Any


class ConfigError(ValueError):
    """A configuration value or file is invalid; the message says which and why."""


@dataclass(frozen=True)
class Option:
    """How a config field appears as an option (a ``OPTIONS`` table entry)."""

    help: str
    metavar: str | None = None
    choices: tuple[str, ...] | None = None
    # The option's name (Beam's dest, the Flex Template parameter) when it is not the field's.
    name: str | None = None
    # What the help says for a default of None ("derived from the threshold").
    none_means: str | None = None


# The field types an option can have (beyond ``X | None``).
KINDS: tuple[type, ...] = (bool, int, float, str)


@dataclass(frozen=True)
class ConfigField:
    """One field of a config dataclass, as an option."""

    field: str  # the dataclass field (the YAML key)
    option: str  # the option name: Beam's dest, the Flex Template parameter
    kind: type  # bool, int, float or str
    nullable: bool
    default: Any
    help: str
    metavar: str | None
    choices: tuple[str, ...] | None
    none_means: str | None

    @property
    def flag(self) -> str:
        """The command-line spelling: ``--num-perm`` (``--num_perm`` is its alias)."""
        return "--" + self.option.replace("_", "-")

    @property
    def aliases(self) -> tuple[str, ...]:
        """Every spelling: the dashed one first (what help and suggestions show)."""
        underscore = "--" + self.option
        return (self.flag,) if underscore == self.flag else (self.flag, underscore)

    def default_text(self) -> str:
        """The default as the help shows it."""
        if self.kind is bool:
            return "on" if self.default else "off"
        if self.default is None:
            return self.none_means or "none"
        if isinstance(self.default, str):
            return repr(self.default) if not self.default or " " in self.default else (
                self.default)
        return str(self.default)


def _kind(name: str, annotation: Any) -> tuple[type, bool]:
    """``(kind, nullable)`` of a field annotated ``annotation``."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        kinds = [a for a in args if a is not type(None)]
        if len(kinds) == 1 and kinds[0] in KINDS and len(args) == 2:
            return kinds[0], True
    elif annotation in KINDS:
        return annotation, False
    raise TypeError(f"config field {name!r}: type {annotation!r} cannot be an option "
                    f"(use one of {[k.__name__ for k in KINDS]}, optionally | None)")


@functools.cache
def config_fields(cls: type) -> tuple[ConfigField, ...]:
    """The fields of dataclass ``cls`` as options, in declaration order."""
    hints = typing.get_type_hints(cls)
    table: dict[str, Option] = getattr(cls, "OPTIONS", {})
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(table) - set(fields))
    if unknown:
        raise TypeError(f"{cls.__name__}.OPTIONS names no field: {unknown}")
    out = []
    for name, field in fields.items():
        kind, nullable = _kind(name, hints[name])
        spec = table.get(name) or Option(help=name.replace("_", " "))
        default = field.default
        if default is dataclasses.MISSING:
            default = None if field.default_factory is dataclasses.MISSING else (
                field.default_factory())
        out.append(ConfigField(
            field=name, option=spec.name or name, kind=kind, nullable=nullable,
            default=default, help=spec.help, metavar=None if spec.choices else spec.metavar,
            choices=spec.choices, none_means=spec.none_means))
    options = [f.option for f in out]
    if len(set(options)) != len(options):
        raise TypeError(f"{cls.__name__}: two fields share an option name: {options}")
    return tuple(out)


def coerce(cls: type, name: str, value: Any) -> Any:
    """Check a YAML value of field ``name`` of ``cls`` against the field's type: the value
    (an integer given for a float becomes a float), else :class:`ConfigError`."""
    spec = next(f for f in config_fields(cls) if f.field == name)
    if value is None:
        if not spec.nullable:
            raise ConfigError(f"{name} may not be null")
        return None
    if spec.kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name} must be an integer, got {value!r}")
    elif spec.kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{name} must be a number, got {value!r}")
        value = float(value)
    elif spec.kind is str and not isinstance(value, str):
        raise ConfigError(f"{name} must be a string, got {value!r}")
    elif spec.kind is bool and not isinstance(value, bool):
        raise ConfigError(f"{name} must be true or false, got {value!r}")
    return value


def config_from_mapping(cls: type, values: dict[str, Any], section: str,
                        source: str = "config") -> Any:
    """``cls(**values)``, each value checked by :func:`coerce`; unknown keys are an error
    naming them and the known ones (``section`` names the YAML section in the message)."""
    known = {f.field for f in config_fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"{source}: unknown {section} key(s) {unknown}; known keys are "
                          f"{sorted(known)}")
    return cls(**{k: coerce(cls, k, v) for k, v in values.items()})
