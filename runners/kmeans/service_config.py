"""What the K-Means service is and where a start recorded it: :class:`ServiceConfig` and the
state file (``.ndcl/service.json``) that ``start_service`` writes and ``status``/``stop`` and
clients given no address read.

Here rather than beside ``start_service`` because connecting (:mod:`runners.kmeans.connection`)
reads the state file too, and neither Ray nor JAX is needed to describe a service.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_STATE_FILE = Path(".ndcl") / "service.json"
START_HINT = "start it with `ndcl service start` (or pass --address of a running one)"
STATE_FORMAT = 1


@dataclass(frozen=True)
class ServiceConfig:
    """Where the service lives and what its actor asks Ray for.

    ``address``: ``None`` means the service recorded in the state file (``start_service``
    starts a local head when there is none); otherwise a GCS address ``"host:port"``, a Ray
    Client address ``"ray://host:10001"``, or ``"auto"`` (the cluster of the last default
    ``ray start`` on this machine). ``RAY_ADDRESS`` is never consulted.
    ``resources`` holds custom/accelerator resources such as ``{"TPU": 4}``; CPUs and GPUs go in
    ``num_cpus``/``num_gpus``. ``head_num_cpus``: CPUs a locally started head advertises
    (``None``: this machine's count, at least ``num_cpus``). ``runtime_env``: passed to the
    actor, e.g. ``{"py_modules": [...]}`` when the cluster does not have ndcl installed.
    """

    address: str | None = None
    namespace: str = "ndcl"
    name: str = "ndcl-kmeans"
    num_cpus: float = 1
    num_gpus: float = 0
    resources: dict[str, float] = field(default_factory=dict)
    max_restarts: int = 3
    max_task_retries: int = 3
    max_concurrency: int = 4
    model_dir: str | None = None
    head_num_cpus: int | None = None
    runtime_env: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if not self.name or not self.namespace:
            raise ValueError("ServiceConfig.name and .namespace must be non-empty")
        if self.num_cpus < 0 or self.num_gpus < 0:
            raise ValueError("ServiceConfig.num_cpus and .num_gpus must be >= 0")
        bad = {"CPU", "GPU"} & set(self.resources)
        if bad:
            raise ValueError(f"put {sorted(bad)} in num_cpus/num_gpus, not in resources")
        if any(v < 0 for v in self.resources.values()):
            raise ValueError(f"resource amounts must be >= 0: {self.resources}")
        if self.max_concurrency < 1:
            raise ValueError("ServiceConfig.max_concurrency must be >= 1")


def read_state(state_file: str | os.PathLike[str] | None = None) -> dict[str, Any] | None:
    """The state ``start_service`` recorded, or None when there is none (or it is unreadable)."""
    path = Path(state_file) if state_file is not None else DEFAULT_STATE_FILE
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) and state.get("address") else None


def write_state(state_file: Path, state: dict[str, Any]) -> None:
    state_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = state_file.with_name(state_file.name + ".tmp")
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, state_file)



def merge_resources(text: str | None) -> dict[str, float]:
    """Parse ``--resources '{"TPU": 4}'`` (JSON object of numbers)."""
    if not text:
        return {}
    value = json.loads(text)
    if not isinstance(value, Mapping) or not all(
            isinstance(k, str) and isinstance(v, int | float) for k, v in value.items()):
        raise ValueError(f"--resources must be a JSON object of numbers, got {text!r}")
    return {k: float(v) for k, v in value.items()}
