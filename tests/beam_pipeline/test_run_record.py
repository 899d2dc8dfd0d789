"""``beam_pipeline.run_record``: the time parts are recorded beside the stages."""

from __future__ import annotations


def test_time_parts_are_recorded_beside_the_stages_and_kept_out_of_the_stage_list() -> None:
    from beam_pipeline.report_plots import PARTS_AFTER, PARTS_BEFORE, _ordered_stages
    from beam_pipeline.run_record import build_record

    summary = {"read": 3, "kept": 3, "duplicates": 0, "rejected": 0, "wall_seconds": 5.0,
               "stage_seconds": {"read": 0.5, "write_outputs": 0.5},
               "time_parts": {"start_up": 2.0, "prepare": 0.1, "build_graph": 0.8, "run": 2.0,
                              "summarise": 0.1},
               "runner_overhead_seconds": 1.0}
    record = build_record(summary, command="dedup", argv=["dedup"], input_patterns=["in"],
                          output="out", runner="direct", workers=1, resources=None,
                          input_bytes=1)
    stages = {row["stage"]: row["seconds"] for row in record["stage_timings"]}
    assert stages == {"read": 0.5, "write_outputs": 0.5, "(start up)": 2.0, "(prepare)": 0.1,
                      "(build graph)": 0.8, "(summarise)": 0.1, "(runner overhead)": 1.0}
    # Every recorded part has its place in the report's whole-run bar; they add up to the wall.
    assert set(stages) - {"read", "write_outputs"} == set(PARTS_BEFORE) | set(PARTS_AFTER)
    assert sum(stages.values()) == summary["wall_seconds"]

    class Run:
        def __init__(self, stages: dict[str, float]) -> None:
            self.stages = stages

    assert _ordered_stages([Run(stages)]) == ["read", "write_outputs"]
