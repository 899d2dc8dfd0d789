"""Tier 1: ``beam_pipeline._startup``'s cached Beam signatures give Beam's own answers, and
the ndcl program's Beam without Google Cloud gets all of it back when a run needs it."""

from __future__ import annotations

import functools
import gc
import inspect
import json
import subprocess
import sys
import threading
import weakref
from pathlib import Path

import apache_beam as beam
from apache_beam.transforms import core, ptransform, util
from apache_beam.typehints import decorators

from beam_pipeline._startup import cache_beam_signatures, cached_per_function


class _Fn(beam.DoFn):
    def process(self, element: int, side: str = "x", *rest: int) -> list[int]:
        return [element]


def _plain(a: int, b: str = "b", *, c: float = 1.0) -> str:
    return b


def test_cached_signatures_equal_beams_for_every_kind_of_callable() -> None:
    calls: list[object] = []

    def compute(func: object) -> inspect.Signature:
        calls.append(func)
        # Beam's own lookup, whether or not the cached one is installed already.
        return getattr(decorators.get_signature, "uncached", decorators.get_signature)(func)

    cached = cached_per_function(compute)
    callables = [_plain, _Fn().process, _Fn().process, _Fn, str.upper, functools.partial(_plain, 1),
                 len, lambda x, y=2: x]
    for func in callables:
        assert cached(func) == compute(func), func
    # Functions and bound methods are computed once (the second bound method, of another
    # instance, is answered from the first); every other callable each time.
    calls.clear()
    for func in callables:
        cached(func)
    assert [type(c) for c in calls] == [type(_Fn), type(str.upper), functools.partial,
                                        type(len)]
    assert str(cached(_Fn().process)) == (
        "(element: 'int', side: 'str' = 'x', *rest: 'int') -> 'list[int]'")


def test_cache_keeps_no_function_alive() -> None:
    cached = cached_per_function(inspect.signature)
    namespace: dict[str, object] = {}
    exec("def transient(a, b=1):\n    return a", namespace)  # a function nothing else holds
    assert str(cached(namespace["transient"])) == "(a, b=1)"
    alive = weakref.ref(namespace.pop("transient"))
    gc.collect()
    assert alive() is None


def test_beam_modules_use_the_cached_lookup() -> None:
    cache_beam_signatures()
    cache_beam_signatures()  # a second call installs nothing more
    installed = decorators.get_signature
    assert hasattr(installed, "uncached") and not hasattr(installed.uncached, "uncached")
    assert core.get_signature is ptransform.get_signature is util.get_signature is installed


class _Stateful(beam.DoFn):
    COUNT = beam.transforms.userstate.CombiningValueStateSpec("count", sum)
    EXPIRY = beam.transforms.userstate.TimerSpec(
        "expiry", beam.transforms.timeutil.TimeDomain.WATERMARK)

    def process(self, element: tuple[str, int],
                count: object = beam.DoFn.StateParam(COUNT),
                timer: object = beam.DoFn.TimerParam(EXPIRY)) -> list[int]:
        return [element[1]]

    @beam.transforms.userstate.on_timer(EXPIRY)
    def expire(self) -> list[int]:
        return []


class _Holder:
    def stateful_method(self, element: int,
                        count: object = beam.DoFn.StateParam(_Stateful.COUNT)) -> int:
        return element


def test_cached_dofn_specs_equal_beams_and_follow_the_instance() -> None:
    from apache_beam.transforms import userstate

    from beam_pipeline._startup import cache_beam_dofn_specs, dofn_specs_key

    cache_beam_dofn_specs()
    cached = userstate.get_dofn_specs
    beams = cached.uncached
    plain_map = beam.Map(lambda x: x).fn
    with_bound = _Fn()
    with_bound.extra = _Holder().stateful_method  # a bound method on the instance
    hidden = _Fn()
    hidden.process = None  # hides the class's process: Beam no longer reads it
    for dofn in (_Fn(), _Stateful(), _Stateful(), plain_map, with_bound, hidden, _Fn()):
        assert cached(dofn) == beams(dofn), dofn
    assert cached(_Stateful())[0] == {_Stateful.COUNT}
    assert cached(plain_map) == (set(), set())
    # Each caller gets its own sets.
    cached(_Stateful())[0].clear()
    assert cached(_Stateful())[0] == {_Stateful.COUNT}
    # Keys: per class, with the instance's bound methods and hiding attributes.
    assert dofn_specs_key(_Fn()) == dofn_specs_key(_Fn()) != dofn_specs_key(hidden)
    assert cached(with_bound) == ({_Stateful.COUNT}, set()) != cached(_Fn())
    assert dofn_specs_key(with_bound) != dofn_specs_key(_Fn())

    class Dynamic(beam.DoFn):
        def __getattr__(self, name: str) -> object:
            raise AttributeError(name)

    assert dofn_specs_key(Dynamic()) is None


# --------------------------------------------------------------------------------------------
# Google Cloud left out of the ndcl program's Beam import, and put back when needed
# --------------------------------------------------------------------------------------------

_REPO = Path(__file__).parents[2]
# Prints, as JSON, the names of every loaded Beam module (non-None values) and which of
# _startup.DEFERRED_MODULES are loaded, after `then` ran; argv[1:] is the program's command line.
_NAMES_SCRIPT = """
import json, sys
then = sys.argv.pop(1)
import beam_pipeline._startup as startup
loaded_at_import = [m for m in startup.DEFERRED_MODULES if m in sys.modules]
exec(then)
names = {name: sorted(k for k, v in vars(module).items() if v is not None)
         for name, module in list(sys.modules.items())
         if module is not None and name.startswith("apache_beam")}
print(json.dumps({"at_import": loaded_at_import, "names": names,
                  "loaded": [m for m in startup.DEFERRED_MODULES if m in sys.modules]}))
"""


def _beam_names(then: str, *argv: str) -> dict:
    done = subprocess.run([sys.executable, "-c", _NAMES_SCRIPT, then, *argv],
                          capture_output=True, text=True, cwd=_REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "bson" not in done.stderr  # Beam's warning about MongoDB's driver, only deferred
    return json.loads(done.stdout.splitlines()[-1])


def test_mentions_google_cloud() -> None:
    from beam_pipeline._startup import mentions_google_cloud

    assert mentions_google_cloud(["dedup", "--input", "gs://b/x.json.gz"])
    assert mentions_google_cloud(["run", "--config", "configs/c4_dataflow.yaml"])
    assert mentions_google_cloud(["--runner=DataflowRunner"])
    assert not mentions_google_cloud(["dedup", "--input", "data/x.json.gz", "--output", "o"])
    assert not mentions_google_cloud([])


def test_beam_without_cloud_gets_every_name_back_on_a_gs_path() -> None:
    """Left out at import; the first gs:// path puts back every name of every Beam module that
    a plain import makes (a Beam upgrade that guards another Google Cloud import fails here)."""
    plain = _beam_names("import apache_beam", "dedup", "--input", "gs://b/x")
    assert plain["at_import"] == list(DEFERRED_LOADED_PLAINLY)
    lean = _beam_names(
        "from apache_beam.io.filesystems import FileSystems\n"
        "fs = FileSystems.get_filesystem('gs://bucket/x.json.gz')\n"
        "assert type(fs).__name__ == 'GCSFileSystem', fs\n"
        "from beam_pipeline._startup import load_deferred_modules; load_deferred_modules()\n",
        "dedup", "--input", "data/x.json.gz")
    assert lean["at_import"] == []
    assert lean["loaded"] == list(DEFERRED_LOADED_PLAINLY)
    missing = {name: sorted(set(names) - set(lean["names"].get(name, ())))
               for name, names in plain["names"].items()}
    assert not {name: gone for name, gone in missing.items() if gone}


def test_local_run_imports_no_cloud_and_a_dataflow_runner_loads_it() -> None:
    lean = _beam_names(
        "from beam_pipeline.run import make_pipeline_options\n"
        "make_pipeline_options([])\n"
        "assert not [m for m in startup.DEFERRED_MODULES if m in sys.modules]\n"
        "make_pipeline_options(['--runner', 'DataflowRunner'])\n"
        "from apache_beam.runners.dataflow import dataflow_runner\n"
        "assert dataflow_runner.dataflow_api is not None\n",
        "dedup", "--input", "data/x.json.gz")
    assert lean["at_import"] == [] and lean["loaded"] == list(DEFERRED_LOADED_PLAINLY)


DEFERRED_LOADED_PLAINLY = ("apache_beam.io.gcp.gcsfilesystem", "apache_beam.io.gcp.bigquery",
                                "google.cloud.dataflow", "apitools", "bson")


# --------------------------------------------------------------------------------------------
# Lighter bundle processors for the in-process runner
# --------------------------------------------------------------------------------------------


_UNPICKLED_ON: list[str] = []


class _RecordUnpickling(beam.DoFn):
    """Records the thread its copy is unpickled on (Beam unpickles each stage's DoFns)."""

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        _UNPICKLED_ON.append(threading.current_thread().name)

    def process(self, element: int) -> list[int]:
        if element < 0:
            raise ValueError("negative")
        return [element * 2]


def test_stages_are_built_on_the_calling_thread_with_a_shorter_sampling_period() -> None:
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner
    from apache_beam.runners.worker import statesampler
    from apache_beam.testing.util import assert_that, equal_to
    from apache_beam.utils.counters import CounterFactory

    from beam_pipeline._startup import SAMPLING_PERIOD_MS, lighten_bundle_processors

    lighten_bundle_processors()
    lighten_bundle_processors()  # once is enough; twice changes nothing
    _UNPICKLED_ON.clear()
    with beam.Pipeline(runner=FnApiRunner()) as pipeline:
        doubled = pipeline | beam.Create([1, 2, 3]) | beam.ParDo(_RecordUnpickling())
        assert_that(doubled, equal_to([2, 4, 6]))
    assert _UNPICKLED_ON
    assert not [name for name in _UNPICKLED_ON if "ExecutionTreeCreator" in name]
    assert statesampler.StateSampler("s", CounterFactory()).sampling_period_ms \
        == SAMPLING_PERIOD_MS


def test_an_error_building_or_running_a_stage_still_fails_the_run() -> None:
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    from beam_pipeline._startup import _CallingThreadExecutor, lighten_bundle_processors

    lighten_bundle_processors()
    with _CallingThreadExecutor(max_workers=1) as executor:
        failed = executor.submit(int, "x")
        assert isinstance(failed.exception(), ValueError)
        assert executor.submit(int, "7").result(timeout=1) == 7
    try:
        with beam.Pipeline(runner=FnApiRunner()) as pipeline:
            _ = pipeline | beam.Create([1, -1]) | beam.ParDo(_RecordUnpickling())
    except Exception as exc:  # Beam wraps the DoFn's error
        assert "negative" in str(exc)
    else:
        raise AssertionError("the run did not fail")


def _yields_and_returns(element: int):  # the case Beam's check looks for
    if element:
        return [element]
    yield element


def _returns(element: int) -> list[int]:
    return [element]


def test_yield_checks_cached_give_beams_answers() -> None:
    from apache_beam.transforms import core

    from beam_pipeline._startup import cache_beam_yield_checks

    cache_beam_yield_checks()
    cache_beam_yield_checks()
    check = core._check_fn_use_yield_and_return
    beams = check.uncached
    for func in (_yields_and_returns, _returns, _Fn().process, _Fn().process, len):
        assert check(func) == beams(func), func
    assert check(_yields_and_returns) is True and check(_returns) is False


def test_yield_checks_are_kept_per_code_signatures_per_function() -> None:
    calls: list[object] = []

    def check(func: object) -> bool:
        calls.append(func)
        return False

    by_code = cached_per_function(check, by_code=True)
    closures = [lambda x, k=k: x + k for k in range(3)]  # three functions, one code
    assert [by_code(f) for f in closures] == [False] * 3 and len(calls) == 1
    per_function = cached_per_function(inspect.signature)
    assert [str(per_function(f)) for f in closures] == ["(x, k=0)", "(x, k=1)", "(x, k=2)"]
