"""Imported first by the ``ndcl`` program (``beam_pipeline.cli``): Apache Beam without pandas
and, unless the command line names Google Cloud, without its Google Cloud modules until they
are needed; Beam's signature lookups cached; a thread fewer and a shorter wait per stage of
the in-process runner (:func:`lighten_bundle_processors`).

``import apache_beam`` imports pandas (about 0.3 s of the program's start-up, measured: 1.2 s
against 0.9 s for ``import beam_pipeline.cli``) only to register Beam's pandas type hints,
which serve DataFrame-typed batched DoFns; NDCL's graph has none. So, when neither is imported
yet, Beam is imported while ``import pandas`` fails, and pandas stays importable afterwards
for the commands that use it (``ndcl evaluate``, ``ndcl report``). Worker processes that
Beam starts import Beam normally; the graph they run is the same.

Google Cloud: ``import apache_beam`` also imports, each inside ``try/except ImportError``,
the GCS filesystem (with google-cloud-storage), BigQuery, Pub/Sub, the Dataflow API client,
apitools with oauth2client (for ``apache_beam.utils.retry``'s ``HttpError``) and MongoDB's
driver: about 0.6 s of the program's start-up (``import apache_beam`` 1.09 -> 0.67 s without
the first three, medians of four by hand, and about 0.15 s more without the last two), used
only by a run that reads or writes ``gs://`` paths or runs on Dataflow (MongoDB: never).
When no argument of the command line mentions ``gs://`` or ``dataflow``
(:func:`mentions_google_cloud`; a preset such as ``configs/c4_dataflow.yaml`` does by its
name), :func:`import_beam_lean` imports Beam while the modules in :data:`DEFERRED_MODULES`
cannot be imported, so Beam skips them as it would without its extras. Then
:func:`load_deferred_modules` imports them and puts back every name Beam's guarded imports
would have made (the test compares each Beam module's names with a plain import, so a Beam
upgrade that guards another import fails there); it runs on the first ``gs://`` path given to
Beam's ``FileSystems`` and when the runner is Dataflow (``beam_pipeline.run``), so a preset or
a recorded run that names them only inside a file still works. Worker processes import Beam
normally.

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
whole test suite runs with it, the Flink and portable runners included. The same cache
serves Beam's check of each ``process`` method's source (:func:`cache_beam_yield_checks`).

DoFn specs: Beam's ``userstate.get_dofn_specs`` (a DoFn's state and timer declarations) walks
every attribute of the DoFn each time it is asked, about three times per DoFn per run;
:func:`cache_beam_dofn_specs` remembers the answer per :func:`dofn_specs_key` (0.3 s less
fixed cost on the demo corpus, alternated by hand: 3.32 -> 2.92 s medians of four).
"""

from __future__ import annotations

import importlib
import logging
import sys
import types
import weakref
from collections.abc import Callable
from concurrent import futures
from typing import Any

# Imported by Beam only inside ``try/except ImportError``, and only for a run that touches
# Google Cloud (or MongoDB, which NDCL never does); see the module's doc.
DEFERRED_MODULES = (
    "apache_beam.io.gcp.gcsfilesystem",  # the gs:// filesystem: google-cloud-storage, auth
    "apache_beam.io.gcp.bigquery",  # first of apache_beam.io's guarded block (+ Pub/Sub)
    "google.cloud.dataflow",  # the Dataflow runner's API client
    "apitools",  # apache_beam.utils.retry's HttpError (with oauth2client)
    "bson",  # apache_beam.io.mongodbio's driver (pymongo, with cryptography and dnspython)
)
CLOUD_MARKS = ("gs://", "dataflow")
# What Beam's guarded imports bind where they succeed: for each module, each name and where it
# comes from ("module" or "module:attribute"), all or none as in Beam's own try blocks.
_GUARDED_NAMES: dict[str, dict[str, str]] = {
    "apache_beam.io.filesystems": {"GCSFileSystem": "apache_beam.io.gcp.gcsfilesystem:"
                                                    "GCSFileSystem"},
    "apache_beam.runners.dataflow.dataflow_runner": {"dataflow_api": "google.cloud.dataflow"},
    "apache_beam.utils.retry": {"HttpError": "apitools.base.py.exceptions:HttpError",
                                "GoogleAPICallError": "google.api_core.exceptions:"
                                                      "GoogleAPICallError"},
    "apache_beam.io.mongodbio": {
        "json_util": "bson.json_util", "objectid": "bson.objectid",
        "ObjectId": "bson.objectid:ObjectId", "ASCENDING": "pymongo:ASCENDING",
        "DESCENDING": "pymongo:DESCENDING", "MongoClient": "pymongo:MongoClient",
        "ReplaceOne": "pymongo:ReplaceOne", "DriverInfo": "pymongo.driver_info:DriverInfo"},
}
# ``apache_beam.io``'s guarded block: each module star-imported (True) or bound by its last
# name (False), stopping at the first that fails.
_BEAM_IO_BLOCK = (("apache_beam.io.gcp.bigquery", True), ("apache_beam.io.gcp.pubsub", True),
                  ("apache_beam.io.gcp.gcsio", False), ("apache_beam.transforms.xlang.io", True))
# Beam logs a warning when MongoDB's driver is missing; here it is only deferred.
_QUIET_WHILE_DEFERRING = ("apache_beam.io.mongodbio",)
_deferred = False


def mentions_google_cloud(argv: list[str]) -> bool:
    """Whether any argument names a ``gs://`` path or Dataflow (any case)."""
    return any(mark in arg.lower() for arg in argv for mark in CLOUD_MARKS)


def import_beam_lean(argv: list[str]) -> None:
    """``import apache_beam`` without pandas, and without :data:`DEFERRED_MODULES` unless
    ``argv`` mentions Google Cloud (see the module's doc); nothing if Beam is imported."""
    global _deferred
    if "apache_beam" in sys.modules:
        return
    blocked = [] if "pandas" in sys.modules else ["pandas"]
    defer = not mentions_google_cloud(argv)
    if defer:
        blocked += [name for name in DEFERRED_MODULES if name not in sys.modules]
    quiet = [logging.getLogger(name) for name in _QUIET_WHILE_DEFERRING] if defer else []
    for name in blocked:
        sys.modules[name] = None  # type: ignore[assignment]  # `import name` raises
    for logger in quiet:
        logger.disabled = True
    try:
        import apache_beam  # noqa: F401
    finally:
        for name in blocked:
            del sys.modules[name]
        for logger in quiet:
            logger.disabled = False
    if defer:
        _deferred = True
        _load_deferred_on_gs_paths()


def _load_deferred_on_gs_paths() -> None:
    from apache_beam.io.filesystems import FileSystems

    get_filesystem = FileSystems.get_filesystem

    def get_filesystem_loading_deferred(path: str) -> Any:
        if _deferred and FileSystems.get_scheme(path) == "gs":
            load_deferred_modules()
        return get_filesystem(path)

    get_filesystem_loading_deferred.original = get_filesystem  # type: ignore[attr-defined]
    FileSystems.get_filesystem = staticmethod(get_filesystem_loading_deferred)


def _resolve(source: str) -> Any:
    module_name, _, attribute = source.partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, attribute) if attribute else module


def load_deferred_modules() -> None:
    """Imports what :func:`import_beam_lean` left out and puts its names where Beam's guarded
    imports would have (nothing if it left nothing out; where an extra such as ``gcp`` is
    missing, as little as a plain ``import apache_beam`` would)."""
    global _deferred
    if not _deferred:
        return
    _deferred = False
    import apache_beam.io
    import apache_beam.transforms
    from apache_beam.io import filesystems

    original = getattr(filesystems.FileSystems.get_filesystem, "original", None)
    if original is not None:
        filesystems.FileSystems.get_filesystem = staticmethod(original)
    for module_name, names in _GUARDED_NAMES.items():
        try:
            values = {name: _resolve(source) for name, source in names.items()}
        except ImportError:
            continue
        module = importlib.import_module(module_name)
        for name, value in values.items():
            setattr(module, name, value)
    try:
        for name, starred in _BEAM_IO_BLOCK:
            module = importlib.import_module(name)
            if not starred:
                setattr(apache_beam.io, name.rsplit(".", 1)[1], module)
                continue
            public = getattr(module, "__all__", None) or [
                key for key in vars(module) if not key.startswith("_")]
            for key in public:
                setattr(apache_beam.io, key, getattr(module, key))
    except ImportError:
        pass
    # ``apache_beam`` star-imports ``apache_beam.transforms``, which now holds submodules the
    # block above imported (``xlang``, ``external_transform_provider``).
    for name, value in vars(apache_beam.transforms).items():
        if not name.startswith("_") and not hasattr(apache_beam, name):
            setattr(apache_beam, name, value)


def cached_per_function(compute: Callable[[Any], Any], by_code: bool = False
                        ) -> Callable[[Any], Any]:
    """``compute`` (Beam's ``get_signature``, its yield-and-return check) remembered per
    function, see the module's doc; its answers are never None. ``by_code``: per code object
    instead, for an answer that follows from the source alone (every closure that ``beam.Map``
    makes is a new function with the same code; a signature also depends on the defaults)."""
    plain: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
    bound: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def cached(func: Any) -> Any:
        if type(func) is types.FunctionType:
            table, key = plain, func
        elif type(func) is types.MethodType and type(func.__func__) is types.FunctionType:
            table, key = bound, func.__func__
        else:
            return compute(func)
        if by_code:
            key = key.__code__
        answer = table.get(key)
        if answer is None:
            answer = table[key] = compute(func)
        return answer

    cached.uncached = compute  # type: ignore[attr-defined]
    return cached


def cache_beam_signatures() -> None:
    """Installs :func:`cached_per_function` where Beam looks ``get_signature`` up (once)."""
    from apache_beam.transforms import core, ptransform, util
    from apache_beam.typehints import decorators

    if hasattr(decorators.get_signature, "uncached"):
        return
    cached = cached_per_function(decorators.get_signature)
    for module in (decorators, core, ptransform, util):
        module.get_signature = cached


def cache_beam_yield_checks() -> None:
    """Remembers, per code object, Beam's check that a DoFn's ``process`` does not both
    ``yield`` and ``return`` a value (``core._check_fn_use_yield_and_return``, which every
    ``ParDo`` asks when it is made): it reads the function's source with
    ``inspect.getsourcelines`` and tokenises it, about 0.4 ms a call, 118 calls for the demo
    ``ndcl dedup``, 85 of them about the lambdas that ``beam.Map`` and ``beam.Create`` make
    (new functions, one code). The answer follows from the source, which does not change
    while the program runs; Beam's warning about ``return None`` is then logged once per
    code, not once per ParDo."""
    from apache_beam.transforms import core

    if not hasattr(core._check_fn_use_yield_and_return, "uncached"):
        core._check_fn_use_yield_and_return = cached_per_function(
            core._check_fn_use_yield_and_return, by_code=True)


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


class _CallingThreadExecutor:
    """A stand-in for ``ThreadPoolExecutor(max_workers=1)`` that runs each call at once on
    the calling thread and hands back its finished future."""

    def __init__(self, *_args: Any, **_kwargs: Any) -> None:
        pass

    def __enter__(self) -> _CallingThreadExecutor:
        return self

    def __exit__(self, *_exc: object) -> None:
        return None

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> futures.Future:
        future: futures.Future = futures.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # handed to the caller by future.result(), as before
            future.set_exception(exc)
        return future


SAMPLING_PERIOD_MS = 4


def lighten_bundle_processors() -> None:
    """A thread fewer, and a shorter wait for another, in each fused stage that Beam's
    in-process runner runs (72 in a demo ``ndcl dedup`` with six components rounds, 63 with
    three; runner overhead 1.25 -> 1.09 s with a 20 ms period, medians of four by hand):

    - A bundle processor builds its execution tree (unpickling the stage's DoFns) on a thread
      of its own, a one-thread pool whose one-hour timeout reports an unpickling that never
      ends and then stops the SDK harness. Here it is built on the calling thread: a stuck
      unpickling hangs the in-process run as a stuck DoFn would. Starting and joining that
      thread cost about 1.5 ms a stage.
    - Its state sampler (Beam's per-step timing, which NDCL does not read; its own stage
      times are counters) sleeps on a thread that ``stop`` must wait for. The first sleep is
      a hundredth of the sampling period (at least 1 ms) and each next is 1.2 times longer,
      up to the period (200 ms by default), so a stage of 100 ms waited about 10 ms at its
      end. With a period of :data:`SAMPLING_PERIOD_MS` no sleep is longer than 4 ms (runner
      overhead 0.92 -> 0.84 s against a 20 ms period, medians of five by hand); the sampler
      then wakes 250 times a second in a long stage instead of 5, each time taking a lock
      without the GIL.

    Only the ``ndcl`` program's process is changed: workers in other processes (Flink at
    parallelism > 1, Dataflow) run Beam's own."""
    from apache_beam.runners.worker import bundle_processor, statesampler

    if getattr(bundle_processor.concurrent, "calling_thread", False):
        return
    bundle_processor.concurrent = types.SimpleNamespace(  # that module's only use of it
        calling_thread=True,
        futures=types.SimpleNamespace(ThreadPoolExecutor=_CallingThreadExecutor,
                                      TimeoutError=futures.TimeoutError))
    statesampler.StateSampler.__init__.__defaults__ = (SAMPLING_PERIOD_MS,)


import_beam_lean(sys.argv[1:])
cache_beam_signatures()
cache_beam_yield_checks()
cache_beam_dofn_specs()
lighten_bundle_processors()
