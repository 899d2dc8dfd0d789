"""Tier 1: ``beam_pipeline._startup``'s cached Beam signatures give Beam's own answers."""

from __future__ import annotations

import functools
import gc
import inspect
import weakref

import apache_beam as beam
from apache_beam.transforms import core, ptransform, util
from apache_beam.typehints import decorators

from beam_pipeline._startup import cache_beam_signatures, cached_signatures


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

    cached = cached_signatures(compute)
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
    cached = cached_signatures(inspect.signature)
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
