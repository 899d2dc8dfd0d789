"""A finished run's summary as the rows the benchmark database stores.

Pure functions of the run summary (no SQLAlchemy): ``beam_pipeline.db.record_run`` inserts
what :func:`build_record` returns, and writes the same dict to the fallback JSON file when the
database cannot be reached, so both hold the same record.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from beam_pipeline.resources import RESOURCE_FIELDS


def _dedup_config(summary: dict[str, Any]) -> dict[str, Any]:
    config = summary.get("config") or {}
    if isinstance(config.get("dedup"), dict):
        return config["dedup"]
    return config if "threshold" in config else {}


def _cluster_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """ClusterMetric rows from ``summary["cluster"]`` (empty for dedup-only runs).

    ``sizes_json`` holds the kept documents per cluster (``{"count", "min", "median", "max",
    "sizes": {id: documents}, "labelled_docs"}``, level-2 ids ``"A/B"``) and, when the fit
    named them, the top terms per cluster (``"top_terms": {id: [term, ...]}``, same ids): the
    table has no column of its own for them, and this is the row of that level. Summaries written
    before these were measured have only the fits: level 1 then stores each cluster's K-Means
    sample members (``{id: n}``) and level 2 each parent's ``{"k", "n"}``.
    """
    cluster = summary.get("cluster")
    if not isinstance(cluster, dict):
        return []
    level_1 = cluster.get("level_1") if isinstance(cluster.get("level_1"), dict) else {}
    level_2 = cluster.get("level_2") if isinstance(cluster.get("level_2"), dict) else {}
    if "fits" in level_2:
        return [{"level": level, "k": k, "nmi": data.get("nmi"), "ari": data.get("ari"),
                 "silhouette": data.get("silhouette"),
                 "sizes_json": _sizes_json(data, _top_terms(level, data))}
                for level, k, data in ((1, cluster.get("k1", level_1.get("k")), level_1),
                                       (2, cluster.get("k2", level_2.get("k")), level_2))]
    # Older summaries: level_2 holds one fit per level-1 cluster, and its "n" is that
    # cluster's size in the fitted sample, the best level-1 sizes such a summary offers.
    sizes_1 = {str(cid): fit.get("n") for cid, fit in level_2.items() if isinstance(fit, dict)}
    rows = [{
        "level": 1,
        "k": cluster.get("k1", level_1.get("k")),
        "nmi": level_1.get("nmi"), "ari": level_1.get("ari"),
        "silhouette": level_1.get("silhouette"),
        "sizes_json": json.dumps(sizes_1, sort_keys=True) if sizes_1 else None,
    }]
    if level_2:
        rows.append({
            "level": 2, "k": cluster.get("k2"), "nmi": None, "ari": None, "silhouette": None,
            "sizes_json": json.dumps({str(cid): {"k": fit.get("k"), "n": fit.get("n")}
                                      for cid, fit in level_2.items() if isinstance(fit, dict)},
                                     sort_keys=True),
        })
    return rows


def _top_terms(level: int, data: dict[str, Any]) -> dict[str, list[str]]:
    """``{cluster id: terms}`` of a summary level (level 2: ``"A/B"`` from each fit's)."""
    if level == 1:
        found = data.get("top_terms")
        return {str(k): list(v) for k, v in found.items()} if isinstance(found, dict) else {}
    out = {}
    for a, fit in (data.get("fits") or {}).items():
        terms = fit.get("top_terms") if isinstance(fit, dict) else None
        if isinstance(terms, dict):
            out.update({f"{a}/{b}": list(v) for b, v in terms.items()})
    return out


def _sizes_json(level: dict[str, Any], top_terms: dict[str, list[str]] | None = None
                ) -> str | None:
    sizes = level.get("sizes")
    if not isinstance(sizes, dict) and not top_terms:
        return None
    stored = {**(sizes if isinstance(sizes, dict) else {}),
              "labelled_docs": level.get("labelled_docs")}
    return json.dumps({**stored, **({"top_terms": top_terms} if top_terms else {})},
                      sort_keys=True)


def build_record(summary: dict[str, Any], *, command: str, argv: list[str],
                 input_patterns: list[str], output: str | None, runner: str | None,
                 workers: int | None, resources: dict[str, Any] | None,
                 input_bytes: int | None, code_version: str | None = None,
                 notes: str | None = None) -> dict[str, Any]:
    """Plain-dict form of everything ``record_run`` stores (also the fallback file's body)."""
    dedup = _dedup_config(summary)
    cluster = summary.get("cluster") if isinstance(summary.get("cluster"), dict) else {}
    cluster_cfg = (summary.get("config") or {}).get("cluster") or {}
    run = {
        "created_at": datetime.now(timezone.utc).isoformat(),
        "command": command,
        "workflow": summary.get("workflow"),
        "runner": runner,
        "workers": workers,
        "input_pattern": " ".join(input_patterns),
        "output": output,
        "threshold": summary.get("threshold", dedup.get("threshold")),
        "ngram": summary.get("ngram", dedup.get("ngram")),
        "num_perm": summary.get("num_perm", dedup.get("num_perm")),
        "bands": summary.get("bands", dedup.get("bands")),
        "rows": summary.get("rows", dedup.get("rows")),
        "k1": cluster.get("k1", cluster_cfg.get("k1")),
        "k2": cluster.get("k2", cluster_cfg.get("k2")),
        "docs_read": summary.get("read"),
        "docs_kept": summary.get("kept"),
        "duplicates": summary.get("duplicates"),
        "duplicates_exact": summary.get("duplicates_exact"),
        "duplicates_near": summary.get("duplicates_near"),
        "rejected": summary.get("rejected"),
        "total_seconds": summary.get("wall_seconds"),
        "input_bytes": input_bytes if input_bytes is not None else summary.get("input_bytes"),
        "config_hash": summary.get("config_hash"),
        "config_json": json.dumps(summary.get("config") or {}, sort_keys=True),
        "argv_json": json.dumps(list(argv)),
        "code_version": code_version,
        "notes": notes,
    }
    stages = [{"stage": name, "seconds": float(secs), "elements": None}
              for name, secs in sorted((summary.get("stage_seconds") or {}).items())]
    # The run's time outside the stages, as named parts in parentheses (they are not pipeline
    # stages): start-up, preparation, graph construction, the runner's overhead, summary.
    parts = dict(summary.get("time_parts") or {})
    parts.pop("run", None)  # the stages and the runner's overhead make it up
    if "runner_overhead_seconds" in summary:
        parts["runner overhead"] = summary["runner_overhead_seconds"]
    stages += [{"stage": f"({name.replace('_', ' ')})", "seconds": float(secs), "elements": None}
               for name, secs in parts.items()]
    res = {f: (resources or {}).get(f) for f in RESOURCE_FIELDS} if resources else None
    return {"run": run, "stage_timings": stages, "resource_metric": res,
            "cluster_metrics": _cluster_rows(summary)}
