"""Imported first by the ``ndcl`` program (``beam_pipeline.cli``): Apache Beam without pandas,
and Beam's signature lookups cached.

``import apache_beam`` imports pandas (about 0.3 s of the program's start-up, measured: 1.2 s
against 0.9 s for ``import beam_pipeline.cli``) only to register Beam's pandas type hints,
which serve DataFrame-typed batched DoFns; NDCL's graph has none. So, when neither is imported
yet, Beam is imported while ``import pandas`` fails, and pandas stays importable afterwards
for the commands that use it (``ndcl evaluate``, ``ndcl report``). Worker processes that
Beam starts import Beam normally; the graph they run is the same.

Signatures: Beam asks ``inspect.signature`` about every method of every DoFn again and again
(``apache_beam.typehints.decorators.get_signature``: when a transform is applied, when the
graph is translated, when each stage's bundle processor is built): 38,018 calls for 300
distinct functions in one ``ndcl dedup`` of the demo corpus, about 0.8 s of its 4.9 s (graph
0.61 -> 0.42 s, runner overhead 1.76 -> 1.22 s, measured). :func:`cache_beam_signatures`
remembers the answer per plain function, and per function behind a bound method (binding only
drops the first parameter, whatever the instance), weakly, so nothing is kept alive; every
other callable (classes, builtins, partials, callable objects) is asked each time as before.
The answer is the one Beam computes, from the function's code, defaults, annotations and
``__wrapped__``/``__signature__``, which nothing changes after a function is defined.
This leans on Beam's module layout (three modules import ``get_signature`` by name); the
whole test suite runs with it, the Flink and portable runners included.

DoFn specs: Beam's ``userstate.get_dofn_specs`` (a DoFn's state and timer declarations) walks
every attribute of the DoFn each time it is asked, about three times per DoFn per run;
:func:`cache_beam_dofn_specs` remembers the answer per :func:`dofn_specs_key` (0.3 s less
fixed cost on the demo corpus, alternated by hand: 3.32 -> 2.92 s medians of four).
"""

from __future__ import annotations

import sys
import types
import weakref
from collections.abc import Callable
from inspect import Signature
from typing import Any


def import_beam_without_pandas() -> None:
    if "apache_beam" in sys.modules or "pandas" in sys.modules:
        return
    sys.modules["pandas"] = None  # type: ignore[assignment]  # `import pandas` raises
    try:
        import apache_beam  # noqa: F401
    finally:
        del sys.modules["pandas"]


def cached_signatures(compute: Callable[[Any], Signature]) -> Callable[[Any], Signature]:
    """``compute`` (Beam's ``get_signature``) remembered per function, see the module's doc."""
    plain: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
    bound: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def get_signature(func: Any) -> Signature:
        if type(func) is types.FunctionType:
            table, key = plain, func
        elif type(func) is types.MethodType and type(func.__func__) is types.FunctionType:
            table, key = bound, func.__func__
        else:
            return compute(func)
        signature = table.get(key)
        if signature is None:
            signature = table[key] = compute(func)
        return signature

    get_signature.uncached = compute  # type: ignore[attr-defined]
    return get_signature


def cache_beam_signatures() -> None:
    """Installs :func:`cached_signatures` where Beam looks ``get_signature`` up (once)."""
    from apache_beam.transforms import core, ptransform, util
    from apache_beam.typehints import decorators

    if hasattr(decorators.get_signature, "uncached"):
        return
    cached = cached_signatures(decorators.get_signature)
    for module in (decorators, core, ptransform, util):
        module.get_signature = cached


def dofn_specs_key(dofn: Any) -> tuple | None:
    """What Beam's ``get_dofn_specs`` answer depends on, or None where that is not sure.

    Beam takes every attribute of the DoFn that is a bound method and reads its parameters'
    defaults: the class's methods, fixed per class, and any bound method stored on the
    instance (a ``beam.Map`` of another object's method), or an instance attribute that hides
    a method. So the key is the class with the instance's own attributes of those kinds; a
    class that computes attributes (``__getattr__``) or has no ``__dict__`` is not keyed."""
    cls = type(dofn)
    own = getattr(dofn, "__dict__", None)
    if own is None or cls.__getattribute__ is not object.__getattribute__ or hasattr(
            cls, "__getattr__"):
        return None
    shown = []
    for name, value in own.items():
        if type(value) is types.MethodType:
            shown.append((name, value.__func__))
        elif hasattr(cls, name):
            shown.append((name, None))  # hides the class's attribute of that name
    return (cls, tuple(sorted(shown, key=lambda item: item[0])))


def cache_beam_dofn_specs() -> None:
    """Remembers Beam's ``userstate.get_dofn_specs`` per :func:`dofn_specs_key`: Beam asks it
    for every DoFn when the graph is translated and twice when each stage's bundle processor
    is built, each time walking ``dir(dofn)`` (about 0.15 s of a demo ``ndcl dedup``, measured
    with the signature cache on). Callers get their own copies of the two sets."""
    from apache_beam.transforms import userstate

    compute = userstate.get_dofn_specs
    if hasattr(compute, "uncached"):
        return
    answers: dict[tuple, tuple[frozenset, frozenset]] = {}

    def get_dofn_specs(dofn: Any) -> tuple[set, set]:
        key = dofn_specs_key(dofn)
        if key is None:
            return compute(dofn)
        answer = answers.get(key)
        if answer is None:
            state, timers = compute(dofn)
            answer = answers[key] = (frozenset(state), frozenset(timers))
        return set(answer[0]), set(answer[1])

    get_dofn_specs.uncached = compute  # type: ignore[attr-defined]
    userstate.get_dofn_specs = get_dofn_specs


import_beam_without_pandas()
cache_beam_signatures()
cache_beam_dofn_specs()
