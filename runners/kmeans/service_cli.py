"""``ndcl service start|status|stop``: run the Ray-hosted K-Means service from the shell.

    ndcl service start  [--address ADDR] [--num-cpus N] [--num-gpus N] [--resources JSON]
                        [--model-dir DIR] [--head-num-cpus N] [--name NAME] [--namespace NS]
                        [--state-file PATH] [--timeout S]
    ndcl service status [--address ADDR] [--name NAME] [--namespace NS] [--state-file PATH]
    ndcl service stop   [--state-file PATH]

``start`` with no ``--address`` starts a local Ray head on 127.0.0.1 (or reuses the one the
state file records) and creates the detached actor; with ``--address`` it only creates the
actor on that cluster. ``--num-cpus/--num-gpus/--resources`` are what the actor asks for
(``--resources '{"TPU": 4}'``). ``stop`` ends only what ``start`` recorded having started.
Exit status 0 on success, 1 on failure (with an ``error:`` line on stderr).

Wiring: ``add_service_parser(subparsers)`` then ``run_service_command(args)`` when
``args.command == "service"``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runners.kmeans.service import ServiceConfig

PREFIX = "ndcl service"
# The defaults of runners.kmeans.service (ServiceConfig's fields, DEFAULT_STATE_FILE) for the
# flags: that module imports Ray, which building the ``ndcl`` parser (``ndcl --help``) must
# not; only running a service command imports it. tests/runners/kmeans/test_service_cli.py
# checks that they agree.
DEFAULTS: dict[str, Any] = {"name": "ndcl-kmeans", "namespace": "ndcl", "num_cpus": 1,
                            "num_gpus": 0, "max_concurrency": 4,
                            "state_file": ".ndcl/service.json"}


def _add_target_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--address", default=None,
                        help="Ray cluster: host:port (GCS), ray://host:10001 or 'auto' "
                             "(default: the one recorded in the state file)")
    parser.add_argument("--name", default=DEFAULTS["name"],
                        help="actor name (default: %(default)s)")
    parser.add_argument("--namespace", default=DEFAULTS["namespace"],
                        help="Ray namespace (default: %(default)s)")
    parser.add_argument("--state-file", default=DEFAULTS["state_file"], metavar="PATH",
                        help="where start records what it started (default: %(default)s)")
    parser.add_argument("--timeout", type=float, default=None, metavar="S",
                        help="give up after S seconds (default: 120 for start, 15 for status)")


def add_service_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``service start|status|stop`` to an ``add_subparsers()`` object."""
    service = subparsers.add_parser(
        "service", help="start, inspect or stop the Ray-hosted K-Means service",
        description=__doc__.split("\n\n")[0])
    actions = service.add_subparsers(dest="service_command", required=True, metavar="ACTION")
    start = actions.add_parser("start", help="start a local Ray head (unless --address) and "
                                             "the K-Means service actor")
    _add_target_flags(start)
    start.add_argument("--num-cpus", type=float, default=DEFAULTS["num_cpus"], metavar="N",
                       help="CPUs the actor asks for (default: %(default)s)")
    start.add_argument("--num-gpus", type=float, default=DEFAULTS["num_gpus"], metavar="N",
                       help="GPUs the actor asks for (default: %(default)s)")
    start.add_argument("--resources", default=None, metavar="JSON",
                       help='other resources the actor asks for, e.g. \'{"TPU": 4}\' '
                            "(default: none)")
    start.add_argument("--model-dir", default=None, metavar="DIR",
                       help="persist fitted models here, so a restarted actor reloads them "
                            "(default: none, in memory only)")
    start.add_argument("--head-num-cpus", type=int, default=None, metavar="N",
                       help="CPUs a locally started head advertises (default: all)")
    start.add_argument("--max-concurrency", type=int, default=DEFAULTS["max_concurrency"],
                       metavar="N",
                       help="fits/predicts the actor runs at once (default: %(default)s)")
    status = actions.add_parser("status", help="is the service up? (exit 1 if not)")
    _add_target_flags(status)
    stop = actions.add_parser("stop", help="stop what `start` started (and nothing else)")
    stop.add_argument("--state-file", default=DEFAULTS["state_file"], metavar="PATH",
                      help="the state file written by start (default: %(default)s)")
    stop.add_argument("--timeout", type=float, default=None, metavar="S",
                      help="give up after S seconds (default: 30)")
    return service


def _config_from_args(args: argparse.Namespace) -> ServiceConfig:
    from runners.kmeans.service import ServiceConfig, merge_resources

    return ServiceConfig(
        address=args.address,
        name=args.name,
        namespace=args.namespace,
        num_cpus=getattr(args, "num_cpus", ServiceConfig.num_cpus),
        num_gpus=getattr(args, "num_gpus", ServiceConfig.num_gpus),
        resources=merge_resources(getattr(args, "resources", None)),
        model_dir=getattr(args, "model_dir", None),
        head_num_cpus=getattr(args, "head_num_cpus", None),
        max_concurrency=getattr(args, "max_concurrency", ServiceConfig.max_concurrency),
    )


def _describe_health(health: dict[str, Any]) -> str:
    devices = health.get("jax_devices") or []
    return (f"pid {health.get('pid')}, jax {health.get('jax_backend')} "
            f"({len(devices)} device(s)), {health.get('models_in_memory', 0)} model(s) in "
            f"memory, {health.get('models_persisted', 0)} persisted, up "
            f"{health.get('uptime_s', 0.0):.0f} s"
            + (", restarted by Ray" if health.get("restarted") else ""))


def _start(args: argparse.Namespace) -> int:
    from runners.kmeans.service import start_service

    result = start_service(_config_from_args(args), state_file=args.state_file,
                           timeout_s=args.timeout or 120.0)
    head = "started a local Ray head" if result.started_head else "using the Ray cluster"
    print(f"{PREFIX}: {head} at {result.address}"
          + (f" (Ray Client: {result.client_address})" if result.client_address else ""))
    actor = "created" if result.created_actor else "found running"
    print(f"{PREFIX}: {actor} actor {args.name!r} in namespace {args.namespace!r}: "
          f"{_describe_health(result.health)}")
    if result.health.get("model_dir"):
        print(f"{PREFIX}: models persisted to {result.health['model_dir']}")
    print(f"{PREFIX}: ready in {result.seconds:.1f} s; state in {result.state_file}; connect "
          f"with --address {result.address}; stop with `ndcl service stop`")
    return 0


def _status(args: argparse.Namespace) -> int:
    from runners.kmeans.service import service_status

    status = service_status(_config_from_args(args), state_file=args.state_file,
                            timeout_s=args.timeout or 15.0)
    if not status.ok:
        print(f"{PREFIX}: error: {status.error}", file=sys.stderr)
        return 1
    assert status.health is not None
    print(f"{PREFIX}: up at {status.address}: actor {status.health.get('name')!r} "
          f"(namespace {status.health.get('namespace')!r}), {_describe_health(status.health)}")
    if status.health.get("model_ids"):
        shown = status.health["model_ids"][:10]
        more = len(status.health["model_ids"]) - len(shown)
        print(f"{PREFIX}: models: {', '.join(shown)}" + (f" (+{more} more)" if more else ""))
    if status.state:
        owned = [what for what, key in (("head", "started_head"), ("actor", "created_actor"))
                 if status.state.get(key)]
        print(f"{PREFIX}: started by `ndcl service start`: {', '.join(owned) or 'nothing'}")
    return 0


def _stop(args: argparse.Namespace) -> int:
    from runners.kmeans.service import stop_service

    result = stop_service(state_file=args.state_file, timeout_s=args.timeout or 30.0)
    for message in result.messages:
        print(f"{PREFIX}: {message}")
    return 0


def run_service_command(args: argparse.Namespace) -> int:
    """Run ``args.service_command``; print a short status; 0 on success, 1 on failure."""
    from runners.kmeans.service import ServiceError

    # Ray's own INFO lines (connecting, job ids) are noise for a one-line status.
    logging.getLogger("ray").setLevel(logging.WARNING)
    handlers = {"start": _start, "status": _status, "stop": _stop}
    try:
        return handlers[args.service_command](args)
    except (ServiceError, ValueError) as exc:
        print(f"{PREFIX}: error: {exc}", file=sys.stderr)
        return 1


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point (``python -m runners.kmeans.service_cli service start``)."""
    parser = argparse.ArgumentParser(prog="ndcl")
    add_service_parser(parser.add_subparsers(dest="command", required=True))
    return run_service_command(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
