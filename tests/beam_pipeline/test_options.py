"""NDCL's options generated from the config dataclasses (``beam_pipeline.options``): a field is
an option and a flag with no other edit, with its type, default and help; YAML presets supply
the defaults, options given override them, bad values are one-line ``ConfigError``s; the CLI
and Beam parse the same flags. (The Flex Template's parameters: ``tests/runners/dataflow``.)"""

from __future__ import annotations

import argparse
import dataclasses
import gc
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from beam_pipeline import config
from beam_pipeline import options as ndcl_options
from beam_pipeline.cli_checks import parse_args
from beam_pipeline.config import (
    ClusterConfig,
    ConfigError,
    DedupConfig,
    load_cluster_config,
    load_dedup_config,
)
from beam_pipeline.config_fields import Option, config_fields
from beam_pipeline.options import (
    ClusterOptions,
    DedupOptions,
    RunOptions,
    config_argv,
    config_from_options,
    option_names,
    options_class,
    options_from_configs,
)


@dataclass(frozen=True)
class ToyConfig:
    toy_size: int = 3
    toy_ratio: float = 0.5
    toy_name: str = "plain"
    toy_cap: int | None = None
    toy_on: bool = False

    OPTIONS: ClassVar[dict[str, Option]] = {
        "toy_size": Option("how many", "N"),
        "toy_name": Option("which one", choices=("plain", "fancy")),
        "toy_on": Option("switch it on", name="toy_switch"),
    }

    def __post_init__(self) -> None:
        if self.toy_size < 1:
            raise ConfigError(f"toy_size must be >= 1, got {self.toy_size}")


@dataclass(frozen=True)
class GrownToyConfig(ToyConfig):
    """ToyConfig with one more field, and nothing else changed."""

    toy_extra: str | None = None


@pytest.fixture
def toy_options() -> Iterator[tuple[type[PipelineOptions], type[PipelineOptions]]]:
    """The toys' generated options classes. Beam parses every registered ``PipelineOptions``
    class whenever it reads all options (``get_all_options``), and the two toys declare the
    same flags: afterwards both are emptied, so that they clash with nothing even while
    pytest still holds them."""
    toys = (options_class(ToyConfig), options_class(GrownToyConfig, "GrownToyOptions"))
    yield toys
    for config_cls, generated in zip((ToyConfig, GrownToyConfig), toys):
        ndcl_options._GENERATED.pop(config_cls)
        generated._add_argparse_args = classmethod(lambda cls, parser: None)
    gc.collect()
    PipelineOptions([]).get_all_options()  # no clash left behind


def _parser(options_cls: type[PipelineOptions]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    options_cls._add_argparse_args(parser)
    return parser


# --------------------------------------------------------------------------- generation


def test_every_field_becomes_an_option(toy_options: Any) -> None:
    toy, grown = toy_options
    assert toy.__name__ == "ToyOptions" and toy.CONFIG is ToyConfig
    assert issubclass(toy, PipelineOptions)
    assert option_names(toy) == ["toy_size", "toy_ratio", "toy_name", "toy_cap", "toy_switch"]
    # A new field is an option (and a flag) without any other edit.
    assert option_names(grown) == [*option_names(toy), "toy_extra"]
    assert options_class(ToyConfig) is toy  # generated once


def test_types_defaults_choices_and_help(toy_options: Any) -> None:
    toy, _ = toy_options
    actions = {a.dest: a for a in _parser(toy)._actions}
    assert actions["toy_size"].type is int and actions["toy_ratio"].type is float
    assert actions["toy_name"].choices == ("plain", "fancy")
    assert actions["toy_size"].option_strings == ["--toy-size", "--toy_size"]
    assert actions["toy_switch"].option_strings == ["--toy-switch", "--toy_switch"]
    # Unset options are None, so that they leave a preset alone; the help shows the default.
    assert all(actions[name].default is None for name in option_names(toy))
    assert actions["toy_size"].help == "how many (default: 3, or the --config preset)"
    assert actions["toy_switch"].help == "switch it on (default: off, or the --config preset)"
    assert "(default: none," in actions["toy_cap"].help
    assert actions["toy_ratio"].help.startswith("toy ratio (default: 0.5,")  # no table entry

    view = PipelineOptions(["--toy_size=7", "--toy-ratio", "2", "--toy_name=fancy",
                            "--toy_cap=9", "--toy_switch"]).view_as(toy)
    assert (view.toy_size, view.toy_ratio, view.toy_name, view.toy_cap, view.toy_switch) == (
        7, 2.0, "fancy", 9, True)
    unset = PipelineOptions([]).view_as(toy)
    assert unset.toy_size is None and unset.toy_switch is None
    assert config_from_options(ToyConfig, PipelineOptions([])) == ToyConfig()


def test_toy_preset_override_and_bad_values(toy_options: Any, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(config.SECTIONS, GrownToyConfig, "toy")
    preset = tmp_path / "toy.yaml"
    preset.write_text("toy:\n  toy_size: 5\n  toy_extra: yaml\n  toy_on: true\n")
    options = PipelineOptions([f"--config={preset}", "--toy_size=6"])
    assert config_from_options(GrownToyConfig, options) == GrownToyConfig(
        toy_size=6, toy_extra="yaml", toy_on=True)
    assert config_from_options(GrownToyConfig, PipelineOptions([]), preset) == GrownToyConfig(
        toy_size=5, toy_extra="yaml", toy_on=True)
    with pytest.raises(ConfigError, match=r"^toy_size must be >= 1, got 0$"):
        config_from_options(GrownToyConfig, PipelineOptions(["--toy_size=0"]))
    preset.write_text("toy:\n  toy_ratio: many\n")
    with pytest.raises(ConfigError, match=r"^toy_ratio must be a number, got 'many'$"):
        config_from_options(GrownToyConfig, options)
    preset.write_text("toy:\n  toy_sise: 1\n")
    with pytest.raises(ConfigError, match=r"unknown toy key\(s\) \['toy_sise'\]"):
        config_from_options(GrownToyConfig, options)


def test_every_config_field_is_an_option() -> None:
    for cls in (DedupConfig, ClusterConfig):
        fields = [f.name for f in dataclasses.fields(cls)]
        assert [s.field for s in config_fields(cls)] == fields
    assert option_names(DedupOptions)[:3] == ["threshold", "num_perm", "ngram"]
    assert "cluster_seed" in option_names(ClusterOptions)
    assert "kmeans_backend" in option_names(ClusterOptions)
    assert len(option_names()) == len(set(option_names()))


def test_ndcl_options_are_registered_with_beam_without_conflicts() -> None:
    options = PipelineOptions(["--runner=DirectRunner"])
    everything = options.get_all_options()  # parses every registered class: no clash
    assert {"num_perm", "cluster_seed", "workflow"} <= set(everything)
    # Unset, they add nothing to what runners receive.
    proto = options.to_runner_api()
    assert not [k for k in proto.fields if any(n in k for n in ("num_perm", "k1", "config"))]


# --------------------------------------------------------------------------- conversion


def test_preset_gives_defaults_and_options_override(tmp_path: Path) -> None:
    preset = tmp_path / "p.yaml"
    preset.write_text("dedup:\n  num_perm: 128\n  ngram: 3\ncluster:\n  k1: 4\n  seed: 9\n")
    options = PipelineOptions([f"--config={preset}", "--ngram=4", "--cluster_seed=5",
                               "--kmeans-backend", "local", "--balanced"])
    dedup = config_from_options(DedupConfig, options)
    assert (dedup.num_perm, dedup.ngram, dedup.threshold) == (128, 4, 0.7)
    assert dedup == load_dedup_config(preset, {"ngram": 4})
    cluster = config_from_options(ClusterConfig, options)
    assert (cluster.k1, cluster.seed, cluster.backend, cluster.balanced) == (4, 5, "local", True)
    assert cluster == load_cluster_config(preset, {"seed": 5, "backend": "local",
                                                   "balanced": True})
    # An explicit preset wins over the options' --config; without one, the defaults.
    assert config_from_options(DedupConfig, PipelineOptions([]), preset) == \
        load_dedup_config(preset)
    assert config_from_options(DedupConfig, PipelineOptions([])) == DedupConfig()
    assert options.view_as(RunOptions).config == str(preset)


def test_conversion_both_ways() -> None:
    dedup = DedupConfig(threshold=0.8, num_perm=128, bands=16, rows=8, verify="none",
                        fp_weight=0.3, fn_weight=0.7)
    cluster = ClusterConfig(k1=3, seed=7, tokenizer="ascii", backend="local", balanced=True,
                            tol=0.0, service_timeout_s=30.0, label_field="")
    argv = config_argv(dedup)
    assert argv == ["--threshold=0.8", "--num_perm=128", "--bands=16", "--rows=8",
                    "--verify=none", "--fp_weight=0.3", "--fn_weight=0.7"]
    assert config_argv(DedupConfig()) == []
    assert len(config_argv(DedupConfig(), changed_only=False)) == len(
        [f for f in dataclasses.fields(DedupConfig) if getattr(DedupConfig(), f.name)
         is not None])
    options = options_from_configs(dedup, cluster, flags=["--runner=DirectRunner"])
    assert config_from_options(DedupConfig, options) == dedup
    assert config_from_options(ClusterConfig, options) == cluster
    assert options.view_as(ClusterOptions).cluster_tokenizer == "ascii"


@pytest.mark.parametrize(("argv", "message"), [
    (["--threshold=1.5"], "threshold must be in (0, 1], got 1.5"),
    (["--bands=4"], "bands and rows must be given together (or neither)"),
    (["--fp_weight=0.2"], "fp_weight and fn_weight must be given together (or neither)"),
    (["--num_perm=1"], "num_perm must be >= 2, got 1"),
])
def test_bad_values_are_one_line_config_errors(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_options(DedupConfig, PipelineOptions(argv))
    assert str(info.value) == message and "\n" not in str(info.value)


def test_bad_cluster_values_and_bad_yaml_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^cluster.k1 must be >= 1, got 0$"):
        config_from_options(ClusterConfig, PipelineOptions(["--k1=0"]))
    preset = tmp_path / "bad.yaml"
    preset.write_text("cluster:\n  k1: ten\n")
    with pytest.raises(ConfigError, match=r"^k1 must be an integer, got 'ten'$"):
        config_from_options(ClusterConfig, PipelineOptions([f"--config={preset}"]))
    preset.write_text("cluster:\n  kmeans_backend: local\n")  # option names are not YAML keys
    with pytest.raises(ConfigError, match="unknown cluster key"):
        config_from_options(ClusterConfig, PipelineOptions([f"--config={preset}"]))


# --------------------------------------------------------------------------- CLI and template


def test_cli_and_beam_read_the_same_flags(tmp_path: Path) -> None:
    flags = ["--num_perm=64", "--bands", "8", "--rows=8", "--fp-weight", "0.3",
             "--fn-weight=0.7", "--k1", "3", "--cluster-tokenizer", "ascii", "--kmeans-tol=0",
             "--kmeans_backend=local", "--balanced", "--service-timeout-s", "5"]
    args, beam_args = parse_args(["run", "--input", "x", "--output", "y", *flags])
    assert beam_args == []
    options = PipelineOptions(flags)
    for cls in (DedupConfig, ClusterConfig):
        assert config_from_options(cls, args) == config_from_options(cls, options)
    cluster = config_from_options(ClusterConfig, args)
    assert (cluster.tokenizer, cluster.tol, cluster.service_timeout_s) == ("ascii", 0.0, 5.0)
    # Every config option is a flag of `ndcl run`, under the same name.
    run_dests = {a.dest for a in _run_parser()._actions}
    assert set(option_names()) <= run_dests


def _run_parser() -> argparse.ArgumentParser:
    from runners.dataflow.template import run_parser

    return run_parser()
