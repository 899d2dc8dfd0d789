"""``beam_pipeline.config``: configuration loading and validation (plain asserts)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from beam_pipeline.config import (
    TOKENIZERS,
    ConfigError,
    DedupConfig,
    dedup_config_from_mapping,
    load_dedup_config,
    load_yaml,
)
from tests.conftest import REPO


def write_yaml(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# --------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------


def test_defaults_are_valid() -> None:
    cfg = DedupConfig()
    assert cfg.threshold == 0.7
    assert cfg.num_perm == 256
    assert cfg.ngram == 5
    assert cfg.bands is None and cfg.rows is None
    assert cfg.verify == "exact" and cfg.keep == "smallest_id"
    assert load_dedup_config() == cfg
    assert dedup_config_from_mapping({}) == cfg


def test_config_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        DedupConfig().threshold = 0.5  # type: ignore[misc]


def test_unknown_key_is_named() -> None:
    with pytest.raises(ConfigError, match="treshold"):
        dedup_config_from_mapping({"treshold": 0.8})


def test_unknown_yaml_key_is_named(tmp_path: Path) -> None:
    path = write_yaml(tmp_path / "c.yaml", "dedup:\n  threshold: 0.8\n  num_perms: 128\n")
    with pytest.raises(ConfigError, match="num_perms") as info:
        load_dedup_config(path)
    assert str(path) in str(info.value)


def test_unknown_yaml_section_is_named(tmp_path: Path) -> None:
    path = write_yaml(tmp_path / "c.yaml", "dedupe:\n  threshold: 0.8\n")
    with pytest.raises(ConfigError, match="dedupe"):
        load_dedup_config(path)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("threshold", "0.7"),
        ("threshold", True),
        ("threshold", [0.7]),
        ("num_perm", 256.0),
        ("num_perm", "256"),
        ("num_perm", True),
        ("ngram", None),
        ("seed", 1.5),
        ("bands", "4"),
        ("verify", 1),
        ("keep", None),
        ("fp_weight", "0.1"),
    ],
)
def test_wrong_types_error(key: str, value: Any) -> None:
    with pytest.raises(ConfigError, match=key):
        dedup_config_from_mapping({key: value})


def test_wrong_type_from_yaml(tmp_path: Path) -> None:
    path = write_yaml(tmp_path / "c.yaml", "dedup:\n  num_perm: lots\n")
    with pytest.raises(ConfigError, match="num_perm"):
        load_dedup_config(path)


def test_integer_accepted_for_float() -> None:
    cfg = dedup_config_from_mapping({"threshold": 1})
    assert cfg.threshold == 1.0 and isinstance(cfg.threshold, float)


@pytest.mark.parametrize("values", [{"bands": 16}, {"rows": 16}])
def test_bands_and_rows_together(values: dict[str, int]) -> None:
    with pytest.raises(ConfigError, match="bands and rows"):
        dedup_config_from_mapping(values)


def test_bands_times_rows_at_most_num_perm() -> None:
    with pytest.raises(ConfigError, match="num_perm"):
        dedup_config_from_mapping({"bands": 17, "rows": 16, "num_perm": 256})
    cfg = dedup_config_from_mapping({"bands": 16, "rows": 16, "num_perm": 256})
    assert (cfg.bands, cfg.rows) == (16, 16)
    with pytest.raises(ConfigError):
        DedupConfig(num_perm=64, bands=9, rows=8)


@pytest.mark.parametrize(
    "values",
    [
        {"threshold": 0.0},
        {"threshold": 1.01},
        {"threshold": -0.5},
        {"num_perm": 1},
        {"ngram": 0},
        {"bands": 0, "rows": 4},
        {"verify": "fuzzy"},
        {"keep": "random"},
        {"max_bucket_size": 1},
        {"batch_size": 0},
        {"shuffle_partitions": 0},
        {"cc_max_rounds": 0},
        {"max_doc_bytes": 0},
        {"seed": -1},
        {"seed": 2**63},
        {"fp_weight": 0.2},
        {"fp_weight": 0.0, "fn_weight": 0.0},
        {"fp_weight": -0.1, "fn_weight": 1.0},
    ],
)
def test_out_of_domain_values_error(values: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        dedup_config_from_mapping(values)


def test_domain_edges_accepted() -> None:
    cfg = dedup_config_from_mapping({"threshold": 1.0, "seed": 2**63 - 1, "max_bucket_size": 2,
                                     "ngram": 1, "num_perm": 2})
    assert cfg.seed == 2**63 - 1


def test_load_yaml_and_overrides(tmp_path: Path) -> None:
    path = write_yaml(tmp_path / "preset.yaml", (
        "dedup:\n"
        "  threshold: 0.8\n"
        "  num_perm: 128\n"
        "  bands: 16\n"
        "  rows: 8\n"
        "  verify: signature\n"
        "pipeline:\n"
        "  anything: goes\n"
    ))
    cfg = load_dedup_config(path)
    assert (cfg.threshold, cfg.num_perm, cfg.bands, cfg.rows, cfg.verify) == (
        0.8, 128, 16, 8, "signature")
    assert cfg.ngram == DedupConfig().ngram  # untouched keys keep their defaults
    over = load_dedup_config(path, {"threshold": 0.9, "verify": None, "keep": "first"})
    assert over.threshold == 0.9  # override wins
    assert over.verify == "signature"  # None overrides are ignored
    assert over.keep == "first"
    assert over.num_perm == 128
    # Overrides are validated like the file.
    with pytest.raises(ConfigError, match="num_perm"):
        load_dedup_config(path, {"num_perm": 64})  # 16 * 8 > 64


def test_load_yaml_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_dedup_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="YAML"):
        load_dedup_config(write_yaml(tmp_path / "bad.yaml", "dedup: [unclosed\n"))
    with pytest.raises(ConfigError, match="mapping"):
        load_dedup_config(write_yaml(tmp_path / "list.yaml", "- 1\n- 2\n"))
    with pytest.raises(ConfigError, match="mapping"):
        load_dedup_config(write_yaml(tmp_path / "section.yaml", "dedup: 3\n"))


def test_empty_yaml_gives_defaults(tmp_path: Path) -> None:
    assert load_dedup_config(write_yaml(tmp_path / "empty.yaml", "")) == DedupConfig()
    assert load_dedup_config(write_yaml(tmp_path / "null.yaml", "dedup:\n")) == DedupConfig()


def test_local_preset_loads() -> None:
    path = REPO / "configs" / "local.yaml"
    assert set(load_yaml(path)) <= {"dedup", "pipeline"}
    cfg = load_dedup_config(path)
    assert isinstance(cfg, DedupConfig)
    assert cfg == DedupConfig()  # the local preset spells out the defaults


def test_banding_weights() -> None:
    # None: the recall floor derives b and r (with verification).
    assert DedupConfig().banding_weights() is None
    assert DedupConfig(verify="signature").banding_weights() is None
    assert DedupConfig(verify="none").banding_weights() == (0.5, 0.5)
    explicit = dedup_config_from_mapping({"verify": "none", "fp_weight": 0.3, "fn_weight": 0.7})
    assert explicit.banding_weights() == (0.3, 0.7)


def test_fingerprint() -> None:
    assert DedupConfig().fingerprint() == DedupConfig().fingerprint()
    assert DedupConfig().fingerprint() != DedupConfig(seed=2).fingerprint()
    assert len(DedupConfig().fingerprint()) == 16


def test_tokenizers_are_the_transforms() -> None:
    from transforms.minhash import TOKENIZERS as TRANSFORM_TOKENIZERS

    assert TOKENIZERS == tuple(TRANSFORM_TOKENIZERS)
