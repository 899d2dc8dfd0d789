"""``transforms.lsh``: banding parameters, the S-curve, band hashes and bucket stars with plain
asserts, and ``FindCandidatePairs`` with its DoFns (band keys, stars, merged edges) in a
TestPipeline or called directly."""

from __future__ import annotations

import dataclasses

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.util import assert_that, equal_to

from tests.reference import objective
from tests.transforms.conftest import add_dicts, empty_uids, flat_edges, new_pipeline
from transforms.batches import FeatureBatch, batch_key_of, make_uid
from transforms.lsh import (
    BAND_GROUPS,
    CandidatePairs,
    EmitBandKeysFn,
    FindCandidatePairs,
    FindStarsFn,
    LshParams,
    MergeEdgesFn,
    band_groups,
    band_hashes,
    detection_probability,
    group_tag,
    key_edges_by_member,
    optimal_param,
    star_edges,
    uid_offsets,
    uids_of_chunk,
    unique_pairs,
)

# --------------------------------------------------------------------------------------------
# LSH
# --------------------------------------------------------------------------------------------


def test_optimal_param_default() -> None:
    assert optimal_param(0.7, 256, 0.5, 0.5) == (25, 10)
    assert optimal_param(0.7, 256) == (25, 10)


@pytest.mark.parametrize(
    ("threshold", "num_perm", "fp_w", "fn_w"),
    [(0.7, 256, 0.5, 0.5), (0.7, 256, 0.1, 0.9), (0.5, 128, 0.5, 0.5), (0.9, 64, 0.3, 0.7)],
)
def test_optimal_param_minimises_objective(threshold: float, num_perm: int, fp_w: float,
                                           fn_w: float) -> None:
    bands, rows = optimal_param(threshold, num_perm, fp_w, fn_w)
    assert bands >= 1 and rows >= 1
    assert bands * rows <= num_perm
    best = objective(bands, rows, threshold, fp_w, fn_w)
    neighbours = [(bands + db, rows + dr) for db in (-2, -1, 0, 1, 2) for dr in (-1, 0, 1)
                  if (db, dr) != (0, 0)]
    for nb, nr in neighbours:
        if nb >= 1 and nr >= 1 and nb * nr <= num_perm:
            assert best <= objective(nb, nr, threshold, fp_w, fn_w) + 1e-9, (nb, nr)


def test_detection_probability() -> None:
    grid = np.linspace(0.0, 1.0, 501)
    for bands, rows in [(25, 10), (32, 8), (1, 1), (100, 2), (4, 64)]:
        p = detection_probability(grid, bands, rows)
        assert p[0] == 0.0
        assert p[-1] == 1.0
        assert np.all(np.diff(p) >= 0)
        assert np.all((p >= 0) & (p <= 1))
    assert float(detection_probability(0.5, 1, 1)) == pytest.approx(0.5)
    assert float(detection_probability(0.5, 2, 1)) == pytest.approx(0.75)
    assert float(detection_probability(0.5, 1, 2)) == pytest.approx(0.25)
    # More bands raise the curve, more rows lower it.
    assert float(detection_probability(0.6, 30, 10)) > float(detection_probability(0.6, 25, 10))
    assert float(detection_probability(0.6, 25, 11)) < float(detection_probability(0.6, 25, 10))


def test_band_hashes() -> None:
    rng = np.random.default_rng(21)
    bands, rows = 8, 4
    sigs = rng.integers(0, 2**32, size=(6, 32), dtype=np.uint32)
    sigs[3] = sigs[1]
    out = band_hashes(sigs, bands, rows, 1)
    assert out.shape == (6, bands) and out.dtype == np.uint64
    assert np.array_equal(out, band_hashes(sigs.copy(), bands, rows, 1))
    assert np.array_equal(out[1], out[3])
    assert not np.any(out == band_hashes(sigs, bands, rows, 2))
    for col in range(32):
        changed = sigs.copy()
        changed[1, col] ^= np.uint32(1)
        diff = band_hashes(changed, bands, rows, 1) != out
        assert np.flatnonzero(diff[1]).tolist() == [col // rows]
        assert not diff[[0, 2, 3, 4, 5]].any()
    # Equal values in two different bands still hash differently (band index is mixed in).
    same = np.zeros((1, 8), dtype=np.uint32)
    h = band_hashes(same, 2, 4, 1)
    assert h[0, 0] != h[0, 1]
    # Columns past bands * rows are ignored.
    wide = np.concatenate([sigs, sigs[:, :5]], axis=1)
    assert np.array_equal(band_hashes(wide, bands, rows, 1), out)


def test_band_hashes_accept_every_valid_seed() -> None:
    sigs = np.zeros((2, 8), dtype=np.uint32)
    out = band_hashes(sigs, 2, 4, 2**62)
    assert out.shape == (2, 2)


def bucket_keys(buckets: list[tuple[int, int, list[int]]]
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(band, hash, [uids])`` buckets → the flat band-key arrays star_edges takes."""
    band_ids = np.array([band for band, _, uids in buckets for _ in uids], dtype=np.int32)
    hashes = np.array([h for _, h, uids in buckets for _ in uids], dtype=np.uint64)
    uids = np.array([u for _, _, us in buckets for u in us], dtype=np.int64)
    return band_ids, hashes, uids


def test_star_edges_planted_buckets() -> None:
    buckets = [
        (0, 100, [5, 3, 9]),  # → (5, 3), (9, 3)
        (1, 100, [7, 8]),  # same hash, other band: another bucket → (8, 7)
        (0, 200, [4]),  # singleton: no edge
        (2, 300, [5, 3]),  # repeats (5, 3)
        (3, 2**63 + 5, [20, 11, 15, 12, 30, 13]),  # star, not all pairs: 5 edges to 11
    ]
    band_ids, hashes, uids = bucket_keys(buckets)
    perm = np.random.default_rng(0).permutation(len(uids))
    members, centres, stats = star_edges(band_ids[perm], hashes[perm], uids[perm], 5000)
    expected = sorted([(5, 3), (9, 3), (8, 7), (12, 11), (13, 11), (15, 11), (20, 11),
                       (30, 11)])
    assert list(zip(members.tolist(), centres.tolist())) == expected
    assert stats == {"buckets_capped": 0, "bucket_members_dropped": 0, "buckets_multi": 4}


def test_star_edges_cap() -> None:
    buckets = [
        (0, 1, list(range(100, 110))),  # size 10, cap 4: keeps 100..103, drops 6
        (0, 2, [1, 2, 3, 4]),  # exactly the cap: kept whole
        (1, 1, [50, 51, 52, 53, 54]),  # size 5: drops 1 (54)
        (1, 9, [60, 61]),
    ]
    band_ids, hashes, uids = bucket_keys(buckets)
    perm = np.random.default_rng(1).permutation(len(uids))
    members, centres, stats = star_edges(band_ids[perm], hashes[perm], uids[perm], 4)
    expected = sorted([(101, 100), (102, 100), (103, 100), (2, 1), (3, 1), (4, 1),
                       (51, 50), (52, 50), (53, 50), (61, 60)])
    assert list(zip(members.tolist(), centres.tolist())) == expected
    assert stats["buckets_capped"] == 2
    assert stats["bucket_members_dropped"] == 6 + 1
    assert stats["buckets_multi"] == 4


def test_star_edges_empty() -> None:
    empty = np.zeros(0, dtype=np.int64)
    members, centres, stats = star_edges(empty.astype(np.int32), empty.astype(np.uint64),
                                         empty, 10)
    assert len(members) == len(centres) == 0
    assert stats["buckets_capped"] == 0 and stats["bucket_members_dropped"] == 0


def test_unique_pairs() -> None:
    left = np.array([3, 1, 3, 2, 1, 3], dtype=np.int64)
    right = np.array([1, 0, 1, 0, 0, 2], dtype=np.int64)
    got_l, got_r = unique_pairs(left, right)
    assert list(zip(got_l.tolist(), got_r.tolist())) == [(1, 0), (2, 0), (3, 1), (3, 2)]
    e_l, e_r = unique_pairs(np.zeros(0, np.int64), np.zeros(0, np.int64))
    assert len(e_l) == len(e_r) == 0
    rng = np.random.default_rng(2)
    left, right = rng.integers(0, 20, 500), rng.integers(0, 20, 500)
    got_l, got_r = unique_pairs(left, right)
    assert list(zip(got_l.tolist(), got_r.tolist())) == sorted(set(zip(left.tolist(),
                                                                     right.tolist())))


def feature_batch(batch_key: int, uids: list[int], signatures: np.ndarray,
                  ids: list[str] | None = None) -> tuple[int, FeatureBatch]:
    """A hand-built ``(batch_key, FeatureBatch)`` with the given signatures."""
    count = len(uids)
    return batch_key, FeatureBatch(
        batch_key=batch_key,
        uids=np.array(uids, dtype=np.int64),
        ids=ids if ids is not None else [f"doc{uid}" for uid in uids],
        norm_lengths=np.full(count, 10, dtype=np.int64),
        exact_hashes=np.array([[uid, uid] for uid in uids], dtype=np.uint64).reshape(-1, 2),
        signatures=signatures.astype(np.uint32),
    )


# --------------------------------------------------------------------------------------------
# FindCandidatePairs

LSH_BANDS, LSH_ROWS = 4, 2


LSH_SEED = 5


def lsh_fixture(form: str = "signatures"
                ) -> tuple[list[tuple[int, FeatureBatch]], dict[str, int]]:
    """Six documents whose signatures share planted bands; every other value is unique.

    ``form``: the batches carry the ``signatures`` (banded by ``EmitBandKeysFn``) or, as
    ``ComputeFeatures`` makes them with banding, only their ``band_hashes``.
    """
    uid = {"A": make_uid(0, 1), "B": make_uid(0, 2), "D": make_uid(0, 3),
           "C": make_uid(1, 1), "E": make_uid(1, 2), "F": make_uid(1, 3)}
    values = iter(range(1000, 100_000, 7))
    sig = {name: np.array([next(values) for _ in range(LSH_BANDS * LSH_ROWS)], dtype=np.uint32)
           for name in uid}
    sig["B"][0:2] = sig["A"][0:2]  # band 0: {A, B, C}
    sig["C"][0:2] = sig["A"][0:2]
    sig["E"][4:6] = sig["D"][4:6]  # band 2: {D, E}
    sig["D"][6:8] = sig["A"][6:8]  # band 3: {A, D}
    sig["D"][2:4] = sig["A"][2:4]  # band 1: {A, D} too (another band group: one edge)
    batches = [
        feature_batch(batch_key_of(uid["A"], 8), [uid[n] for n in "ABD"],
                      np.stack([sig[n] for n in "ABD"])),
        feature_batch(batch_key_of(uid["C"], 8), [uid[n] for n in "CEF"],
                      np.stack([sig[n] for n in "CEF"])),
    ]
    if form == "band_hashes":
        batches = [(key, dataclasses.replace(
            f, signatures=None,
            band_hashes=band_hashes(f.signatures, LSH_BANDS, LSH_ROWS, LSH_SEED)))
            for key, f in batches]
    else:
        assert form == "signatures", form
    return batches, uid


@pytest.mark.parametrize("form", ["signatures", "band_hashes"])
def test_find_candidate_pairs_star_edges_and_bucket_cap(form: str) -> None:
    batches, uid = lsh_fixture(form)
    uncapped = [(uid["B"], uid["A"]), (uid["C"], uid["A"]), (uid["E"], uid["D"]),
                (uid["D"], uid["A"])]
    capped = [(uid["B"], uid["A"]), (uid["E"], uid["D"]), (uid["D"], uid["A"])]
    # (D, A) is found in bands 1 and 3, two band groups (two shuffles): it is reported and
    # counted once. Exact duplicates (``removed``) leave the buckets before anything else:
    # without the centre A, band 0 is {B, C} around B and bands 1 and 3 hold D alone.
    without_a = [(uid["C"], uid["B"]), (uid["E"], uid["D"])]
    # ... and before the cap: without B, band 0 is {A, C}, within a cap of 2.
    without_b_capped = [(uid["C"], uid["A"]), (uid["E"], uid["D"]), (uid["D"], uid["A"])]
    with new_pipeline() as p:
        features = p | "CreateFeatureBatches" >> beam.Create(batches)
        for label, cap, removed, edges, stats in (
            ("Uncapped", 100, [], uncapped,
             {"buckets_capped": 0, "bucket_members_dropped": 0, "buckets_multi": 4,
              "candidate_edges": 4}),
            ("Capped", 2, [], capped,
             {"buckets_capped": 1, "bucket_members_dropped": 1, "buckets_multi": 4,
              "candidate_edges": 3}),
            ("WithoutA", 100, [uid["A"]], without_a,
             {"buckets_capped": 0, "bucket_members_dropped": 0, "buckets_multi": 2,
              "candidate_edges": 2}),
            ("WithoutBCapped", 2, [uid["B"], make_uid(5, 5)], without_b_capped,
             {"buckets_capped": 0, "bucket_members_dropped": 0, "buckets_multi": 4,
              "candidate_edges": 3}),
        ):
            removed_pc = p | f"CreateRemoved{label}" >> beam.Create(
                [np.array(sorted(removed), dtype=np.int64)])
            found = ({"features": features, "removed": removed_pc}
                     | f"FindPairs{label}" >> FindCandidatePairs(LshParams(
                         LSH_BANDS, LSH_ROWS, LSH_SEED, 3, cap)))
            assert isinstance(found, CandidatePairs)
            assert_that(found.edges | f"FlattenEdges{label}" >> beam.FlatMap(flat_edges),
                        equal_to(edges), label=f"CheckEdges{label}")
            assert_that(found.stats | f"SumStats{label}" >> beam.CombineGlobally(add_dicts),
                        equal_to([stats]), label=f"CheckStats{label}")


def test_find_candidate_pairs_accepts_any_valid_seed() -> None:
    batches, uid = lsh_fixture()
    edges = [(uid["B"], uid["A"]), (uid["C"], uid["A"]), (uid["E"], uid["D"]),
             (uid["D"], uid["A"])]
    with new_pipeline() as p:
        inputs = {"features": p | "CreateFeatureBatches" >> beam.Create(batches),
                  "removed": p | "CreateNoRemoved" >> beam.Create([empty_uids()])}
        found = inputs | "FindPairs" >> FindCandidatePairs(
            LshParams(LSH_BANDS, LSH_ROWS, 2**62, 3, 100))
        assert_that(found.edges | "FlattenEdges" >> beam.FlatMap(flat_edges), equal_to(edges),
                    label="CheckEdges")


BIG_BASE = make_uid(3, 1000)  # uids beyond 32 bits, as offsets from a batch's first uid


def band_key_chunk(band_ids: list[int], hashes: list[int], uids: list[int]) -> tuple:
    """One ``(band_ids, hashes, uid offsets, base uid)`` element of a band-key partition, as
    EmitBandKeysFn emits it (uint8 band ids, uint16 offsets from the smallest uid)."""
    base = min(uids)
    return (np.array(band_ids, dtype=np.uint8), np.array(hashes, dtype=np.uint64),
            np.array([u - base for u in uids], dtype=np.uint16), base)


def run_find_stars(cap: int, chunks: list[tuple], removed: np.ndarray | None
                   ) -> tuple[list[tuple[int, int]], dict[str, int]]:
    """FindStarsFn on one partition, outside a pipeline: its edges and its stats."""
    fn = FindStarsFn(cap)
    edges: list[tuple[int, int]] = []
    stats: list[dict[str, int]] = []
    args = () if removed is None else (removed,)
    for out in fn.process((0, iter(chunks)), *args):
        if isinstance(out, beam.pvalue.TaggedOutput):
            assert out.tag == FindStarsFn.STATS_TAG
            stats.append(out.value)
        else:
            members, centres = out
            assert members.dtype == centres.dtype == np.int64
            edges += list(flat_edges(out))
    assert len(stats) == 1
    return sorted(edges), stats[0]


def test_find_stars_drops_removed_members_before_the_cap() -> None:
    u = {i: BIG_BASE + i for i in range(10, 16)}
    # Band 0, hash 7: {10, 11, 12, 13} over two chunks; band 1, hash 7 (another bucket, same
    # hash): {10, 14}; band 0, hash 9: {15} alone.
    chunks = [band_key_chunk([0, 0, 1, 0], [7, 7, 7, 9], [u[12], u[10], u[10], u[15]]),
              band_key_chunk([0, 1, 0], [7, 7, 7], [u[13], u[14], u[11]])]
    # Nothing removed: the cap of 2 keeps {10, 11} of the first bucket. (The edges are
    # counted once they are merged across band groups: MergeEdgesFn.)
    assert run_find_stars(2, chunks, None) == run_find_stars(2, chunks, empty_uids()) == (
        [(u[11], u[10]), (u[14], u[10])],
        {"buckets_capped": 1, "bucket_members_dropped": 2, "buckets_multi": 2})
    # 10 and 12 removed first: {11, 13} fits the cap, centre 11; 14 is left alone.
    removed = np.array([u[10], u[12], 99], dtype=np.int64)
    assert run_find_stars(2, chunks, removed) == (
        [(u[13], u[11])],
        {"buckets_capped": 0, "bucket_members_dropped": 0, "buckets_multi": 1})
    # Every member removed: no edge, no bucket, the stats still come.
    assert run_find_stars(2, chunks, np.array(sorted(u.values()), dtype=np.int64)) == (
        [], {"buckets_capped": 0, "bucket_members_dropped": 0, "buckets_multi": 0})
    # The older chunk form (band_ids, hashes, uids) is read the same way.
    plain = [(c[0], c[1], c[2].astype(np.int64) + c[3]) for c in chunks]
    assert run_find_stars(2, plain, removed) == run_find_stars(2, chunks, removed)


def test_emit_band_keys_groups_offsets_and_partitions() -> None:
    """EmitBandKeysFn: one tagged output per band group, every (document, band) key once,
    uids as narrow offsets from the batch's smallest uid, partitions from the hash."""
    bands, rows, seed, parts = 6, 2, 3, 4
    rng = np.random.default_rng(1)
    uids = [BIG_BASE + i for i in (5, 0, 9, 2)]
    signatures = rng.integers(0, 2**32, size=(len(uids), bands * rows), dtype=np.uint32)
    _, features = feature_batch(batch_key_of(uids[0], 16), uids, signatures)
    banded = dataclasses.replace(features, signatures=None,
                                 band_hashes=band_hashes(signatures, bands, rows, seed))
    groups = band_groups(bands)
    assert [g.tolist() for g in groups] == [[0, 1], [2, 3], [4], [5]]
    assert [g.tolist() for g in band_groups(2)] == [[0], [1]]
    assert sum(len(g) for g in band_groups(300)) == 300 and len(band_groups(300)) == BAND_GROUPS
    hashes = band_hashes(signatures, bands, rows, seed)
    expected = sorted((band, int(hashes[i, band]), uid)
                      for i, uid in enumerate(uids) for band in range(bands))
    for form in (features, banded):  # from signatures, or from the carried band hashes
        fn = EmitBandKeysFn(bands, rows, seed, parts)
        keys = []
        for out in fn.process((features.batch_key, form)):
            assert isinstance(out, beam.pvalue.TaggedOutput)
            group = int(out.tag.removeprefix("bands"))
            assert out.tag == group_tag(group)
            part, (band_ids, chunk_hashes, offsets, base) = out.value
            assert band_ids.dtype == np.uint8 and offsets.dtype == np.uint16
            assert base == min(uids)
            assert set(band_ids.tolist()) <= set(groups[group].tolist())
            assert (chunk_hashes % np.uint64(parts) == np.uint64(part)).all()
            keys += list(zip(band_ids.tolist(), chunk_hashes.tolist(),
                             (offsets.astype(np.int64) + base).tolist()))
        assert sorted(keys) == expected
    many = EmitBandKeysFn(300, 1, seed, parts)
    wide = dataclasses.replace(features, signatures=np.zeros((4, 300), dtype=np.uint32))
    assert {out.value[1][0].dtype for out in many.process((0, wide))} == {np.dtype(np.uint16)}


def test_uid_offsets_and_chunk_uids() -> None:
    base, offsets = uid_offsets(np.array([BIG_BASE + 7, BIG_BASE, BIG_BASE + 65535]))
    assert base == BIG_BASE and offsets.dtype == np.uint16
    assert offsets.tolist() == [7, 0, 65535]
    _, wider = uid_offsets(np.array([BIG_BASE, BIG_BASE + 65536]))
    assert wider.dtype == np.uint32
    _, widest = uid_offsets(np.array([make_uid(0, 1), make_uid(2, 1)]))
    assert widest.dtype == np.int64
    assert uid_offsets(np.zeros(0, dtype=np.int64))[1].tolist() == []
    for uids in ([BIG_BASE + 7, BIG_BASE], [make_uid(0, 1), make_uid(2, 1)]):
        base, offsets = uid_offsets(np.array(uids, dtype=np.int64))
        chunk = (np.zeros(len(uids), np.uint8), np.zeros(len(uids), np.uint64), offsets, base)
        assert uids_of_chunk(chunk).dtype == np.int64
        assert uids_of_chunk(chunk).tolist() == uids


def test_merge_edges_keeps_each_edge_once() -> None:
    edges = (np.array([5, 7, 5, 9], dtype=np.int64), np.array([1, 1, 2, 1], dtype=np.int64))
    keyed = list(key_edges_by_member(edges, 3))
    assert sorted(part for part, _ in keyed) == sorted({5 % 3, 7 % 3, 9 % 3})
    for part, (members, _) in keyed:
        assert (members % 3 == part).all()
    assert sorted(e for _, pair in keyed for e in flat_edges(pair)) == sorted(flat_edges(edges))
    # The same edge from two band groups, plus a distinct one.
    chunks = [(np.array([5, 8]), np.array([1, 2])), (np.array([5]), np.array([1]))]
    out = list(MergeEdgesFn().process((2, iter(chunks))))
    stats = [o.value for o in out if isinstance(o, beam.pvalue.TaggedOutput)]
    found = [e for o in out if not isinstance(o, beam.pvalue.TaggedOutput)
             for e in flat_edges(o)]
    assert stats == [{"candidate_edges": 2}]
    assert sorted(found) == [(5, 1), (8, 2)]
