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
