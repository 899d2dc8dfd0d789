"""What ``ndcl`` does with the arguments its parser does not know.

``dedup``, ``cluster`` and ``run`` pass Beam's own pipeline options (``--direct_num_workers=2``,
``--experiments=...``) to Beam as given; any other unknown argument, for any command, is an
error before anything runs, one line naming the nearest known flag ("unknown option
--treshold; did you mean --threshold?") or the commands that do have it.
"""

from __future__ import annotations

import argparse
import difflib
import re
from typing import Any

from beam_pipeline.cli_parser import all_parsers, build_parser, subparsers_action

# The commands that run a pipeline, so the only ones with Beam options to pass on.
PIPELINE_COMMANDS = ("dedup", "cluster", "run")
# A leftover like -5 or -.5 is a stray value, not a mistyped flag to suggest a name for.
_NEGATIVE_NUMBER = re.compile(r"^-\d+$|^-\d*\.\d+$")


class CommandLineError(ValueError):
    """An argument that neither ``ndcl`` nor Beam knows; the message names it (and the
    nearest known flag)."""


def _command_parser(parser: argparse.ArgumentParser, args: argparse.Namespace
                    ) -> argparse.ArgumentParser:
    """The parser of the (sub)command ``args`` were parsed for (``ndcl service start``'s)."""
    while (sub := subparsers_action(parser)) is not None and getattr(args, sub.dest, None) in (
            sub.choices):
        parser = sub.choices[getattr(args, sub.dest)]
    return parser


def beam_parser() -> argparse.ArgumentParser:
    """Beam's own parser of pipeline options, built as ``PipelineOptions.get_all_options``
    builds it: every ``PipelineOptions`` subclass adds its flags, except NDCL's own
    (``beam_pipeline.options``): those are the commands' flags, which each command takes or
    not (``--k1`` given to ``dedup`` must stay an error, not pass through to Beam)."""
    from apache_beam.options import pipeline_options

    from beam_pipeline.options import is_ndcl_options

    base = getattr(pipeline_options, "_BeamArgumentParser", argparse.ArgumentParser)

    class Parser(base):  # type: ignore[misc, valid-type]
        def error(self, message: str) -> Any:  # a bad value of a Beam option: one line
            raise CommandLineError(message)

    parser = Parser(prog="ndcl", allow_abbrev=False, add_help=False)
    subset: dict[str, type] = {}
    for cls in pipeline_options.PipelineOptions.__subclasses__():
        if not is_ndcl_options(cls):
            subset.setdefault(str(cls), cls)
    for cls in subset.values():
        cls._add_argparse_args(parser)
    return parser


def _options(parser: argparse.ArgumentParser) -> dict[str, str]:
    """Every ``--flag`` spelling ``parser`` accepts → the one to suggest."""
    return {option: action.option_strings[0] for action in parser._actions
            for option in action.option_strings if option.startswith("--")}


def check_leftover_args(parser: argparse.ArgumentParser, args: argparse.Namespace,
                        leftover: list[str]) -> list[str]:
    """The Beam pipeline options among ``leftover`` (what ``parser`` did not recognise), as
    given; anything else raises :class:`CommandLineError`. Only the pipeline commands pass
    options to Beam; for the others every leftover is an error."""
    if not leftover:
        return []
    command = _command_parser(parser, args)
    known = _options(command)
    rest = list(leftover)
    if args.command in PIPELINE_COMMANDS:
        beam = beam_parser()
        known = {**_options(beam), **known}
        _, rest = beam.parse_known_args(leftover)
    if not rest:
        return leftover
    first = rest[0]
    if not first.startswith("-") or _NEGATIVE_NUMBER.match(first) or first == "-":
        raise CommandLineError(f"unexpected argument {first!r}")
    name = first.split("=", 1)[0]
    owners = [p.prog for p in all_parsers(parser)[1:]
              if name in p._option_string_actions and subparsers_action(p) is None]
    if owners:  # a flag of another command (--k1 given to dedup)
        raise CommandLineError(f"unknown option {name} for {command.prog} (a flag of "
                               f"{', '.join(owners)})")
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    if close:
        raise CommandLineError(f"unknown option {name}; did you mean {known[close[0]]}?")
    raise CommandLineError(f"unknown option {name}; see `{command.prog} --help`")


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """``(args, beam_args)``: the parsed ``ndcl`` flags and the Beam pipeline options to pass
    on. argparse errors exit 2; an argument neither ``ndcl`` nor Beam knows raises
    :class:`CommandLineError`."""
    parser = build_parser()
    args, leftover = parser.parse_known_args(argv)
    return args, check_leftover_args(parser, args, leftover)
