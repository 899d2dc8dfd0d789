"""``beam_pipeline.config_fields``: the fields a config dataclass turns into options, and the
coercion of their values."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest

from beam_pipeline.config import ClusterConfig, ConfigError, DedupConfig
from beam_pipeline.config_fields import Option, coerce, config_fields


def test_fields_that_cannot_be_options_fail_when_generated() -> None:
    @dataclass(frozen=True)
    class Bad:
        values: list = dataclasses.field(default_factory=list)  # type: ignore[type-arg]

    with pytest.raises(TypeError, match="'values'"):
        config_fields(Bad)

    @dataclass(frozen=True)
    class Misnamed:
        size: int = 1
        OPTIONS: ClassVar[dict[str, Option]] = {"sise": Option("typo")}

    with pytest.raises(TypeError, match="sise"):
        config_fields(Misnamed)


@pytest.mark.parametrize(("name", "value", "expected"), [
    ("threshold", 1, 1.0), ("num_perm", 64, 64), ("bands", None, None), ("verify", "none", "none"),
])
def test_coerce_accepts(name: str, value: Any, expected: Any) -> None:
    assert coerce(DedupConfig, name, value) == expected
    assert type(coerce(DedupConfig, name, value)) is type(expected)


@pytest.mark.parametrize(("cls", "name", "value", "message"), [
    (DedupConfig, "num_perm", True, "num_perm must be an integer, got True"),
    (DedupConfig, "num_perm", "256", "num_perm must be an integer, got '256'"),
    (DedupConfig, "threshold", "0.7", "threshold must be a number, got '0.7'"),
    (DedupConfig, "verify", 3, "verify must be a string, got 3"),
    (DedupConfig, "seed", None, "seed may not be null"),
    (ClusterConfig, "balanced", "yes", "balanced must be true or false, got 'yes'"),
])
def test_coerce_rejects(cls: type, name: str, value: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=f"^{message}$"):
        coerce(cls, name, value)
