"""``transforms.resolve``: ``ResolveDuplicates`` in a TestPipeline, for both keep policies."""

from __future__ import annotations

import apache_beam as beam
import numpy as np
from apache_beam.testing.util import assert_that, equal_to

from tests.transforms.conftest import new_pipeline
from transforms.batches import NodeInfo, batch_key_of, make_uid, partition_of
from transforms.resolve import DuplicateRow, ResolveDuplicates, ResolveParams

# --------------------------------------------------------------------------------------------
# ResolveDuplicates

RESOLVE_BATCH, RESOLVE_PARTS, RESOLVE_SEED = 4, 3, 5


def resolve_nodes() -> dict[str, NodeInfo]:
    base = np.arange(100, 108, dtype=np.uint32)

    def sig(changed: list[int]) -> np.ndarray:
        out = base.copy()
        out[changed] += 1000
        return out

    return {
        "d": NodeInfo(make_uid(0, 1), "d", 100, sig([])),
        "b": NodeInfo(make_uid(0, 2), "b", 50, sig([0, 1])),
        "c": NodeInfo(make_uid(1, 1), "c", 120, sig([0, 5, 6, 7])),
        "x": NodeInfo(make_uid(1, 2), "x", 10, sig([3])),
        "y": NodeInfo(make_uid(0, 3), "y", 10, sig([3, 4, 5])),
    }


def test_resolve_duplicates_rows() -> None:
    nodes = resolve_nodes()
    uid = {n: node.uid for n, node in nodes.items()}
    label1 = min(uid[n] for n in "dbc")
    label2 = min(uid[n] for n in "xy")
    assert label1 == uid["d"] and label2 == uid["y"]
    # The centre of component 1 arrives with two label elements, as it does from CC.
    labels = [
        (np.array([uid["b"], uid["c"], uid["d"]]), np.array([label1] * 3)),
        (np.array([uid["d"], uid["x"], uid["y"]]), np.array([label1, label2, label2])),
    ]
    node_elements = [
        (int(partition_of(np.array([node.uid]), RESOLVE_PARTS, RESOLVE_SEED)[0]), [node])
        for node in nodes.values()
    ]
    q1 = make_uid(1, 7)
    members = {  # member id: (uid, representative name or (uid, id) outside any component)
        "da": (make_uid(0, 4), "d"),
        "z": (make_uid(1, 5), "b"),
        "q2": (make_uid(1, 6), (q1, "q1")),
        "q3": (make_uid(0, 8), (q1, "q1")),
    }
    exact_members = []
    for member_id, (member_uid, rep) in members.items():
        rep_uid, rep_id = rep if isinstance(rep, tuple) else (uid[rep], rep)
        exact_members.append((batch_key_of(member_uid, RESOLVE_BATCH),
                              (member_uid, member_id, rep_uid, rep_id)))

    def sim(x: str, y: str) -> float:
        return float(np.count_nonzero(nodes[x].signature == nodes[y].signature)) / 8

    def row(doc_uid: int, doc_id: str, kept: str, reason: str, similarity: float,
            size: int) -> tuple[int, DuplicateRow]:
        return batch_key_of(doc_uid, RESOLVE_BATCH), DuplicateRow(
            doc_uid, doc_id, kept, reason, similarity, size)

    expected = {
        # smallest_id keeps "b" (component 1) and "x" (component 2).
        "smallest_id": [
            row(uid["d"], "d", "b", "near", sim("d", "b"), 3),
            row(uid["c"], "c", "b", "near", sim("c", "b"), 3),
            row(uid["y"], "y", "x", "near", sim("y", "x"), 2),
            row(members["da"][0], "da", "b", "exact", sim("d", "b"), 3),
            row(members["z"][0], "z", "b", "exact", 1.0, 3),
            row(members["q2"][0], "q2", "q1", "exact", 1.0, 1),
            row(members["q3"][0], "q3", "q1", "exact", 1.0, 1),
        ],
        # longest keeps "c" (norm length 120); component 2 ties on length, so "x".
        "longest": [
            row(uid["d"], "d", "c", "near", sim("d", "c"), 3),
            row(uid["b"], "b", "c", "near", sim("b", "c"), 3),
            row(uid["y"], "y", "x", "near", sim("y", "x"), 2),
            row(members["da"][0], "da", "c", "exact", sim("d", "c"), 3),
            row(members["z"][0], "z", "c", "exact", sim("b", "c"), 3),
            row(members["q2"][0], "q2", "q1", "exact", 1.0, 1),
            row(members["q3"][0], "q3", "q1", "exact", 1.0, 1),
        ],
    }
    with new_pipeline() as p:
        label_pc = p | "CreateLabels" >> beam.Create(labels)
        node_pc = p | "CreateNodes" >> beam.Create(node_elements)
        member_pc = p | "CreateExactMembers" >> beam.Create(exact_members)
        for policy, rows in expected.items():
            name = policy.title().replace("_", "")
            resolved = (
                {"labels": label_pc, "nodes": node_pc, "exact_members": member_pc}
                | f"Resolve{name}" >> ResolveDuplicates(ResolveParams(
                    policy, "signature", RESOLVE_BATCH, RESOLVE_PARTS, RESOLVE_SEED)))
            assert_that(resolved, equal_to(rows), label=f"CheckRows{name}")
