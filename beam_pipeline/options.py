"""NDCL's options as Beam ``PipelineOptions``, generated from the config dataclasses.

One surface: every field of :class:`~beam_pipeline.config.DedupConfig` and
:class:`~beam_pipeline.config.ClusterConfig` is a Beam pipeline option (:class:`DedupOptions`,
:class:`ClusterOptions`) and an ``ndcl`` flag, both added by :func:`add_config_arguments` from
the fields (``beam_pipeline.config_fields``: name, type, default, help). The option is the
field's name (or its ``OPTIONS`` entry's), which is also the Flex Template parameter
(``runners/dataflow/metadata.json``, one for one); the flag is that name with dashes
(``--num-perm``), the underscore spelling (``--num_perm``, as Beam and the template launcher
write it) its alias. :class:`RunOptions` holds what ``ndcl run`` itself takes (input, output,
preset, ordering).

Options default to None, so that an option left unset leaves the YAML preset alone:
:func:`config_from_options` builds a config from the dataclass defaults, then the preset's
section, then the options given, and a value outside its domain is a one-line
:class:`~beam_pipeline.config.ConfigError`::

    options = PipelineOptions(["--config=configs/local.yaml", "--num_perm=128"])
    cfg = config_from_options(DedupConfig, options)   # local.yaml, with num_perm 128
    config_argv(cfg)                                  # ["--num_perm=128"]: the other way

A number that does not parse (``--num_perm=many``) is argparse's error, as for Beam's own
options (``ndcl`` exits 2 naming the flag).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, TypeVar

from apache_beam.options.pipeline_options import PipelineOptions

from beam_pipeline.config import ClusterConfig, DedupConfig, load_config
from beam_pipeline.config_fields import ConfigField, config_fields

ConfigT = TypeVar("ConfigT")
WORKFLOWS = ("nd_cl", "cl_nd")
DEDUP_SCOPES = ("cluster_A", "cluster_B")
_PRESET = "or the --config preset"


def add_config_arguments(parser: argparse.ArgumentParser | Any, cls: type,
                         only: tuple[str, ...] | None = None) -> None:
    """Add the fields of config dataclass ``cls`` (those named in ``only``, if given) to
    ``parser`` (an argparse parser or group, or Beam's parser of pipeline options): flag
    ``--option-name`` with the alias ``--option_name``, dest the option name, default None,
    the field's type, choices and help, the help showing the field's default."""
    for spec in config_fields(cls):
        if only is None or spec.field in only:
            _add_field(parser, spec)


def _add_field(parser: argparse.ArgumentParser | Any, spec: ConfigField) -> None:
    help_text = f"{spec.help} (default: {spec.default_text()}, {_PRESET})"
    if spec.kind is bool:
        parser.add_argument(*spec.aliases, dest=spec.option, action="store_true",
                            default=None, help=help_text)
    else:
        parser.add_argument(*spec.aliases, dest=spec.option, type=spec.kind, default=None,
                            metavar=spec.metavar, choices=spec.choices, help=help_text)


def add_run_arguments(parser: argparse.ArgumentParser | Any, *, workflow: bool = True,
                      required: bool = False) -> None:
    """What a run takes besides the configs: ``--workflow`` and ``--dedup-scope`` (when
    ``workflow``), ``--input``, ``--output`` (required by the CLI, not as Beam options: Beam
    parses every options class for every pipeline) and ``--config``."""
    if workflow:
        parser.add_argument("--workflow", choices=WORKFLOWS, default="nd_cl",
                            help="nd_cl: dedup, then cluster what is kept; cl_nd: cluster, "
                                 "then dedup inside clusters (default: %(default)s)")
        parser.add_argument("--dedup-scope", "--dedup_scope", dest="dedup_scope",
                            choices=DEDUP_SCOPES, default="cluster_A",
                            help="cl_nd: the clusters inside which duplicates are removed "
                                 "(default: %(default)s)")
    parser.add_argument("--input", nargs="+", required=required, metavar="PATTERN",
                        help="input files: paths, globs or gs:// patterns (JSON lines, "
                             "optionally .gz, or .parquet); - reads standard input "
                             "(required)")
    parser.add_argument("--output", required=required, metavar="DIR",
                        help="output folder: absent, empty or an earlier NDCL output "
                             "(required)")
    parser.add_argument("--config", metavar="YAML",
                        help="preset (configs/*.yaml) that flags override (default: none, "
                             "the built-in defaults shown here)")


_GENERATED: dict[type, type[PipelineOptions]] = {}


def options_class(cls: type, name: str | None = None) -> type[PipelineOptions]:
    """The ``PipelineOptions`` subclass whose options are the fields of config dataclass
    ``cls`` (see :func:`add_config_arguments`), ``CONFIG`` being ``cls``; named ``name``
    (default: ``FooConfig`` → ``FooOptions``). Generated once per ``cls``: defining it
    registers its options with Beam, so every ``PipelineOptions`` parses them from then on."""
    if cls in _GENERATED:
        return _GENERATED[cls]
    config_fields(cls)  # a field that cannot be an option fails here, not at parse time
    name = name or cls.__name__.removesuffix("Config") + "Options"

    def _add_argparse_args(options_cls: type, parser: Any) -> None:
        add_config_arguments(parser, cls)

    generated = type(name, (PipelineOptions,), {
        "__module__": __name__, "__qualname__": name, "CONFIG": cls,
        "__doc__": f"The fields of ``{cls.__name__}`` as pipeline options (generated).",
        "_add_argparse_args": classmethod(_add_argparse_args)})
    _GENERATED[cls] = generated
    return generated


class RunOptions(PipelineOptions):
    """``ndcl run``'s own options: ``--input``, ``--output``, ``--config``, ``--workflow``,
    ``--dedup_scope`` (the Flex Template's parameters besides the configs')."""

    @classmethod
    def _add_argparse_args(cls, parser: Any) -> None:
        add_run_arguments(parser)


DedupOptions = options_class(DedupConfig)
ClusterOptions = options_class(ClusterConfig)
# NDCL's options: the Flex Template's parameters are their names, one for one.
NDCL_OPTIONS: tuple[type[PipelineOptions], ...] = (RunOptions, DedupOptions, ClusterOptions)


def is_ndcl_options(cls: type) -> bool:
    """Whether ``cls`` is one of NDCL's options classes (this module's, generated or not)."""
    return cls.__module__ == __name__


def option_names(*classes: type[PipelineOptions]) -> list[str]:
    """The option names (argparse dests) ``classes`` declare, in order (default: NDCL's)."""
    parser = argparse.ArgumentParser(add_help=False)
    for cls in classes or NDCL_OPTIONS:
        cls._add_argparse_args(parser)
    return list(dict.fromkeys(action.dest for action in parser._actions))


def config_from_options(cls: type[ConfigT], options: PipelineOptions | argparse.Namespace,
                        preset: str | Path | None = None) -> ConfigT:
    """The ``cls`` config of ``options``: the field defaults, then the ``preset`` YAML's
    section (default: the options' ``--config``), then every option given (not None).
    ``options`` is a ``PipelineOptions`` (viewed as ``cls``'s options class) or the CLI's
    parsed namespace, which carries the same names. Raises ``ConfigError``."""
    if isinstance(options, PipelineOptions):
        if preset is None:
            preset = options.view_as(RunOptions).config
        options = options.view_as(options_class(cls))
    elif preset is None:
        preset = getattr(options, "config", None)
    overrides = {spec.field: getattr(options, spec.option, None)
                 for spec in config_fields(cls)}
    return load_config(cls, preset, overrides)


def config_argv(cfg: Any, *, changed_only: bool = True) -> list[str]:
    """``cfg`` as option strings (``--num_perm=128``), the fields that differ from their
    defaults (all with ``changed_only=False``; a False bool is left out, as a flag cannot
    say it), so that :func:`config_from_options` of them gives ``cfg`` back."""
    out = []
    for spec in config_fields(type(cfg)):
        value = getattr(cfg, spec.field)
        if (changed_only and value == spec.default) or value is None:
            continue
        if spec.kind is bool:
            out += [f"--{spec.option}"] if value else []
        else:
            out.append(f"--{spec.option}={value}")
    return out


def options_from_configs(*configs: Any, flags: list[str] | tuple[str, ...] = ()
                         ) -> PipelineOptions:
    """``PipelineOptions`` holding ``configs`` (see :func:`config_argv`) and ``flags``."""
    return PipelineOptions([*flags, *(a for cfg in configs for a in config_argv(cfg))])
