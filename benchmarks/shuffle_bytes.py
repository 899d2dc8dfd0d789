"""Bytes per document that cross each shuffle (GroupByKey) and side input of an ``ndcl`` job.

For ``ndcl dedup``, ``ndcl run --workflow nd_cl`` and ``cl_nd`` (``--kmeans-backend local
--k1 4 --k2 2``) on the bundled demo corpus (``--input`` for another, e.g. a blog shard), the
job is run exactly as the CLI runs it: ``beam_pipeline.cli.main`` is called in a fresh Python
process, on Beam's in-process FnApiRunner (``--runner direct``, the default). That process
first hooks the FnApiRunner (it does not change what runs):

- every primitive GroupByKey (``beam:transform:group_by_key:v1``) is executed by the runner
  through a grouping buffer that receives the encoded elements of the GroupByKey's input. The
  hook counts, per GroupByKey, the encoded bytes handed over (``data bytes``: what the runner
  moves, including Beam's per-element window and timestamp framing) and decodes every element
  once more to count the elements and the *payload*: the key and the value re-encoded with the
  PCollection's key and value coders, what a distributed shuffle stores (``bytes`` below);
- every PCollection consumed as a side input is materialised by the runner in a buffer; the
  hook counts its bytes and elements the same way;
- each decoded element is searched for document text: a ``DocBatch``, a dict with a string
  ``text``, or any string equal to the text of an input document (at least 20 characters).

The runner lifts combiners: a ``CombinePerKey``'s GroupByKey then receives one partial
accumulator per key and bundle instead of every value (``<CombinePerKey>/Group``), as on
Dataflow. The byte figures are exact, not the SDK's sampled estimate; the sampled estimate
(``beam:metric:sampled_byte_size:v1`` x ``beam:metric:element_count:v1`` of the GroupByKey's
input PCollection, from the job's monitoring infos) is recorded in the JSON for comparison.
Bytes per document = bytes / documents read (``summary.json["read"]``).

The code measured is the tree Python imports ``beam_pipeline`` from: this repository
("current"), or with ``--baseline-ref REF`` a temporary ``git worktree`` of REF ("baseline";
``--baseline-code DIR`` for an existing checkout), run with ``cwd`` and ``PYTHONPATH`` there.
Each (tree, command) runs in its own process, which prints its figures as JSON.

Run from the repository root::

    .venv/bin/python benchmarks/shuffle_bytes.py [--input FILE] [--baseline-ref 37afd8f]
        [--baseline-only] [--commands dedup,nd_cl,cl_nd] [--results FILE]

Writes the tables to ``--results`` (default ``benchmarks/results-shuffle-bytes.txt``) and the
figures to the same name with ``.json``. Exit status 1 when a job failed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent

try:
    from benchmarks._measure import baseline_tree as measured_baseline_tree
except ImportError:  # run as a script: benchmarks/ itself is on sys.path
    from _measure import baseline_tree as measured_baseline_tree  # type: ignore[no-redef]
DEFAULT_INPUT = REPO_ROOT / "data" / "demo" / "c4-demo.00000-of-00001.json.gz"
DEFAULT_RESULTS = BENCH_DIR / "results-shuffle-bytes.txt"
COMMANDS = ("dedup", "nd_cl", "cl_nd")
GROUP_BY_KEY_URN = "beam:transform:group_by_key:v1"
MIN_TEXT_CHARS = 20
WALK_ITEMS = 64  # items looked at per container when searching an element for text
WALK_DEPTH = 6


# =========================================================================== the probe
# Runs inside the child process, with the measured tree first on sys.path.


class _Probe:
    """Counts the bytes the FnApiRunner hands to grouping and side-input buffers."""

    def __init__(self, texts: set[int]) -> None:
        self.texts = texts
        self.groups: dict[str, dict[str, Any]] = {}  # runner GroupByKey id → counts
        self.side_inputs: dict[str, dict[str, Any]] = {}  # PCollection id → counts
        self.side_input_ids: set[str] = set()
        self.proto: Any = None
        self.result: Any = None

    # ------------------------------------------------------------------ text search
    def carries_text(self, obj: Any, depth: int = 0) -> bool:
        if depth > WALK_DEPTH:
            return False
        if isinstance(obj, str):
            return len(obj) >= MIN_TEXT_CHARS and hash(obj) in self.texts
        if isinstance(obj, (bytes, bytearray, memoryview)):
            if len(obj) < MIN_TEXT_CHARS:
                return False
            try:
                return hash(bytes(obj).decode("utf-8")) in self.texts
            except UnicodeDecodeError:
                return False
        if isinstance(obj, (int, float, bool)) or obj is None:
            return False
        if type(obj).__name__ == "DocBatch":
            return True
        if isinstance(obj, dict):
            if isinstance(obj.get("text"), str):
                return True
            return any(self.carries_text(v, depth + 1) for _, v in zip(range(WALK_ITEMS),
                                                                          obj.values()))
        if isinstance(obj, (list, tuple, set, frozenset)):
            return any(self.carries_text(v, depth + 1) for _, v in zip(range(WALK_ITEMS), obj))
        import numpy as np

        if isinstance(obj, np.ndarray):
            if obj.dtype.kind in "OUS":
                return any(self.carries_text(v, depth + 1)
                           for v in obj.ravel()[:WALK_ITEMS].tolist())
            return False
        fields = getattr(obj, "__dict__", None)
        if fields is None and hasattr(obj, "__slots__"):
            fields = {name: getattr(obj, name, None) for name in obj.__slots__}
        if isinstance(fields, dict):
            return any(self.carries_text(v, depth + 1) for v in fields.values())
        return False

    # ------------------------------------------------------------------ counting
    @staticmethod
    def new_counts(name: str, pcollection: str) -> dict[str, Any]:
        return {"name": name, "pcollection": pcollection, "elements": 0, "data_bytes": 0,
                "key_bytes": 0, "value_bytes": 0, "bytes": 0, "text_elements": 0,
                "types": None}

    def count(self, counts: dict[str, Any], data: bytes, coder: Any, keyed: bool) -> None:
        """Decode ``data`` (encoded windowed values) and add it to ``counts``."""
        from apache_beam.coders.coder_impl import create_InputStream

        counts["data_bytes"] += len(data)
        stream = create_InputStream(data)
        impl = coder.get_impl()
        value_coder = getattr(coder, "wrapped_value_coder", coder)
        if keyed:
            key_impl = value_coder.key_coder().get_impl()
            val_impl = value_coder.value_coder().get_impl()
        else:
            whole_impl = value_coder.get_impl()
        while stream.size() > 0:
            windowed = impl.decode_from_stream(stream, True)
            value = getattr(windowed, "value", windowed)
            counts["elements"] += 1
            if keyed:
                key, val = value
                key_bytes, val_bytes = len(key_impl.encode(key)), len(val_impl.encode(val))
                counts["key_bytes"] += key_bytes
                counts["value_bytes"] += val_bytes
                counts["bytes"] += key_bytes + val_bytes
                if counts["types"] is None:
                    counts["types"] = f"({type(key).__name__}, {type(val).__name__})"
            else:
                size = len(whole_impl.encode(value))
                counts["value_bytes"] += size
                counts["bytes"] += size
                if counts["types"] is None:
                    counts["types"] = type(value).__name__
            if self.carries_text(value):
                counts["text_elements"] += 1

    # ------------------------------------------------------------------ hooks
    def install(self) -> None:
        from apache_beam.portability.api import beam_runner_api_pb2
        from apache_beam.runners.portability.fn_api_runner import execution, fn_runner
        from apache_beam.runners.portability.fn_api_runner.translations import split_buffer_id

        probe = self
        run_via_runner_api = fn_runner.FnApiRunner.run_via_runner_api

        def run_hook(runner: Any, pipeline_proto: Any, options: Any) -> Any:
            probe.proto = pipeline_proto
            for transform in pipeline_proto.components.transforms.values():
                if transform.spec.urn == "beam:transform:pardo:v1":
                    payload = beam_runner_api_pb2.ParDoPayload.FromString(
                        transform.spec.payload)
                    for tag in payload.side_inputs:
                        probe.side_input_ids.add(transform.inputs[tag])
            probe.result = run_via_runner_api(runner, pipeline_proto, options)
            return probe.result

        get_buffer = execution.BundleContextManager.get_buffer

        def get_buffer_hook(manager: Any, buffer_id: bytes, transform_id: str) -> Any:
            buffer = get_buffer(manager, buffer_id, transform_id)
            if getattr(buffer, "_ndcl_probe", None) is None:
                kind, name = split_buffer_id(buffer_id)
                context = manager.execution_context
                # Decode with the SDK's own coders: the runner's "safe" coders see values of
                # Python-only coders (pickled batches) as opaque bytes.
                if kind == "group":
                    transform = context.pipeline_components.transforms[name]
                    pcollection = next(iter(transform.inputs.values()))
                    coder = context.pipeline_context.coders[
                        context.data_channel_coders[pcollection]]
                    counts = probe.groups.setdefault(
                        name, probe.new_counts(transform.unique_name, pcollection))
                    buffer._ndcl_probe = (counts, coder)
                elif kind == "materialize" and name in probe.side_input_ids:
                    coder = context.pipeline_context.coders[context.data_channel_coders[name]]
                    counts = probe.side_inputs.setdefault(name, probe.new_counts(
                        _producer_name(context.pipeline_components, name), name))
                    buffer._ndcl_probe = (counts, coder)
            return buffer

        group_append = execution.GroupingBuffer.append

        def group_append_hook(buffer: Any, elements_data: bytes) -> None:
            tagged = getattr(buffer, "_ndcl_probe", None)
            if tagged is not None:
                counts, coder = tagged
                probe.count(counts, elements_data, coder, keyed=True)
            group_append(buffer, elements_data)

        list_append = execution.ListBuffer.append

        def list_append_hook(buffer: Any, element: bytes) -> None:
            tagged = getattr(buffer, "_ndcl_probe", None)
            if tagged is not None:
                counts, coder = tagged
                probe.count(counts, element, coder, keyed=False)
            list_append(buffer, element)

        fn_runner.FnApiRunner.run_via_runner_api = run_hook
        execution.BundleContextManager.get_buffer = get_buffer_hook
        execution.GroupingBuffer.append = group_append_hook
        execution.ListBuffer.append = list_append_hook

    # ------------------------------------------------------------------ report
    def sampled(self) -> dict[str, dict[str, int]]:
        """Per PCollection: element count and the sampled byte-size distribution."""
        from apache_beam.metrics import monitoring_infos as mi

        out: dict[str, dict[str, int]] = {}
        if self.result is None:
            return out
        for info in self.result.monitoring_infos():
            pcollection = info.labels.get("PCOLLECTION")
            if not pcollection:
                continue
            entry = out.setdefault(pcollection, {"elements": 0, "sampled_count": 0,
                                                 "sampled_sum": 0})
            if info.urn == mi.ELEMENT_COUNT_URN:
                entry["elements"] += mi.extract_counter_value(info)
            elif info.urn == mi.SAMPLED_BYTE_SIZE_URN:
                count, total, _, _ = mi.extract_distribution(info)
                entry["sampled_count"] += count
                entry["sampled_sum"] += total
        return out

    def report(self) -> dict[str, Any]:
        sampled = self.sampled()

        def finish(counts: dict[str, Any]) -> dict[str, Any]:
            entry = sampled.get(counts["pcollection"])
            if entry and entry["sampled_count"]:
                counts["sampled_estimate_bytes"] = round(
                    entry["elements"] * entry["sampled_sum"] / entry["sampled_count"])
                counts["sampled_elements"] = entry["elements"]
            counts["carries_text"] = counts["text_elements"] > 0
            return counts

        proto_groups = []
        if self.proto is not None:
            proto_groups = sorted(t.unique_name for t in self.proto.components.transforms.values()
                                  if t.spec.urn == GROUP_BY_KEY_URN)
        return {"groups": sorted((finish(c) for c in self.groups.values()),
                                 key=lambda c: c["name"]),
                "side_inputs": sorted((finish(c) for c in self.side_inputs.values()),
                                      key=lambda c: c["name"]),
                "proto_group_by_keys": proto_groups}


def _producer_name(components: Any, pcollection: str) -> str:
    for transform in components.transforms.values():
        if pcollection in transform.outputs.values() and not transform.subtransforms:
            tags = [tag for tag, pc in transform.outputs.items() if pc == pcollection]
            suffix = f".{tags[0]}" if tags and tags[0] not in ("None", "out") else ""
            return transform.unique_name + suffix
    return pcollection


def _input_texts(inputs: Sequence[str]) -> set[int]:
    """Hashes of the input documents' texts (JSON lines, plain or gzip)."""
    import gzip

    texts: set[int] = set()
    for path in inputs:
        opener = gzip.open if path.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                try:
                    text = json.loads(line).get("text")
                except (ValueError, AttributeError):
                    continue
                if isinstance(text, str) and len(text) >= MIN_TEXT_CHARS:
                    texts.add(hash(text))
    return texts


def probe_main(spec: dict[str, Any]) -> int:
    """Child process: run one ndcl command under the probe; print one JSON line."""
    import contextlib
    import io

    probe = _Probe(_input_texts(spec["inputs"]))
    probe.install()
    import beam_pipeline
    from beam_pipeline.cli import main as cli_main

    log = io.StringIO()
    started = time.perf_counter()
    with contextlib.redirect_stdout(log):
        try:
            status = cli_main(spec["argv"])
        except SystemExit as exit_:
            status = exit_.code if isinstance(exit_.code, int) else 1
    seconds = time.perf_counter() - started
    summary_path = Path(spec["output"]) / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    result = {"status": status, "seconds": round(seconds, 1),
              "beam_pipeline": str(Path(beam_pipeline.__file__).resolve().parents[1]),
              "read": summary.get("read"), "kept": summary.get("kept"),
              "duplicates": summary.get("duplicates"), **probe.report(),
              "stdout_tail": log.getvalue()[-2000:]}
    print("NDCL_PROBE " + json.dumps(result), flush=True)
    return 0


# =========================================================================== the driver


def baseline_tree(args: argparse.Namespace, scratch: Path
                  ) -> AbstractContextManager[tuple[Path, str] | None]:
    """The baseline tree of ``--baseline-code`` / ``--baseline-ref`` (``_measure``)."""
    return measured_baseline_tree(REPO_ROOT, args.baseline_ref, args.baseline_code, scratch)


def command_argv(command: str, inputs: Sequence[str], output: Path, db_url: str,
                 args: argparse.Namespace) -> list[str]:
    io_args = ["--input", *inputs, "--output", str(output)]
    if command == "dedup":
        return ["--db-url", db_url, "dedup", *io_args]
    return ["--db-url", db_url, "run", "--workflow", command, *io_args,
            "--kmeans-backend", "local", "--k1", str(args.k1), "--k2", str(args.k2)]


def run_probe(code: str, tree: Path, command: str, inputs: Sequence[str], scratch: Path,
              args: argparse.Namespace) -> dict[str, Any]:
    run_dir = scratch / code / command
    run_dir.mkdir(parents=True)
    output = run_dir / "out"
    spec = {"inputs": list(inputs), "output": str(output),
            "argv": command_argv(command, inputs, output, f"sqlite:///{run_dir / 'runs.db'}",
                                 args)}
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(tree), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))])
    env.pop("NDCL_DB_URL", None)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    print(f"[{code}] {command} ...", file=sys.stderr, flush=True)
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--probe",
                           json.dumps(spec)], cwd=tree, env=env, capture_output=True,
                          text=True)
    line = next((ln for ln in reversed(done.stdout.splitlines())
                 if ln.startswith("NDCL_PROBE ")), None)
    if done.returncode != 0 or line is None:
        return {"status": done.returncode, "error": (done.stderr or done.stdout)[-3000:]}
    result = json.loads(line[len("NDCL_PROBE "):])
    if result["status"] != 0:
        result["error"] = done.stderr[-3000:]
    if Path(result["beam_pipeline"]).resolve() != tree.resolve():
        raise SystemExit(f"error: the {code} probe imported beam_pipeline from "
                         f"{result['beam_pipeline']}, not {tree}")
    print(f"[{code}] {command}: {result['seconds']} s, beam_pipeline from "
          f"{result['beam_pipeline']}", file=sys.stderr, flush=True)
    return result


def _per_doc(value: int, docs: int | None) -> str:
    return f"{value / docs:,.1f}" if docs else "-"


def format_table(code: str, command: str, result: dict[str, Any]) -> list[str]:
    docs = result.get("read")
    lines = [f"{code} / {command}: {docs:,} documents read, {result.get('kept'):,} kept, "
             f"{result.get('duplicates'):,} duplicates"]
    header = (f"  {'shuffle (GroupByKey)':<66}{'elements':>10}{'bytes':>13}{'B/doc':>10}"
              f"{'text':>6}")
    lines += [header, "  " + "-" * (len(header) - 2)]
    for group in result["groups"]:
        lines.append(f"  {group['name'][:66]:<66}{group['elements']:>10,}{group['bytes']:>13,}"
                     f"{_per_doc(group['bytes'], docs):>10}"
                     f"{'yes' if group['carries_text'] else 'no':>6}")
    total = sum(g["bytes"] for g in result["groups"])
    text_total = sum(g["bytes"] for g in result["groups"] if g["carries_text"])
    lines.append(f"  {'total (' + str(len(result['groups'])) + ' shuffles)':<66}"
                 f"{sum(g['elements'] for g in result['groups']):>10,}{total:>13,}"
                 f"{_per_doc(total, docs):>10}")
    lines.append(f"  {'  of which in shuffles carrying text':<66}{'':>10}{text_total:>13,}"
                 f"{_per_doc(text_total, docs):>10}")
    executed = {g["name"] for g in result["groups"]}
    unexecuted = [name for name in result["proto_group_by_keys"] if name not in executed
                  and name.rsplit("/", 1)[0] + "/Group" not in executed]
    if unexecuted:
        lines.append(f"  GroupByKeys in the graph that received nothing: {', '.join(unexecuted)}")
    lines += ["", f"  {'side input (producer)':<66}{'elements':>10}{'bytes':>13}{'B/doc':>10}"
              f"{'text':>6}", "  " + "-" * (len(header) - 2)]
    for side in result["side_inputs"]:
        lines.append(f"  {side['name'][:66]:<66}{side['elements']:>10,}{side['bytes']:>13,}"
                     f"{_per_doc(side['bytes'], docs):>10}"
                     f"{'yes' if side['carries_text'] else 'no':>6}")
    side_total = sum(s["bytes"] for s in result["side_inputs"])
    lines.append(f"  {'total (' + str(len(result['side_inputs'])) + ' side inputs)':<66}"
                 f"{sum(s['elements'] for s in result['side_inputs']):>10,}{side_total:>13,}"
                 f"{_per_doc(side_total, docs):>10}")
    return lines


def totals(result: dict[str, Any]) -> dict[str, Any]:
    docs = result.get("read") or 0
    shuffle = sum(g["bytes"] for g in result["groups"])
    text = sum(g["bytes"] for g in result["groups"] if g["carries_text"])
    side = sum(s["bytes"] for s in result["side_inputs"])
    return {"shuffles": len(result["groups"]), "shuffle_bytes": shuffle,
            "shuffle_bytes_per_doc": shuffle / docs if docs else None,
            "text_shuffles": sum(g["carries_text"] for g in result["groups"]),
            "text_shuffle_bytes_per_doc": text / docs if docs else None,
            "side_input_bytes_per_doc": side / docs if docs else None}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--probe", help=argparse.SUPPRESS)
    parser.add_argument("--input", nargs="+", default=[str(DEFAULT_INPUT)],
                        help="input file(s), JSON lines (default: the bundled demo corpus)")
    parser.add_argument("--commands", default=",".join(COMMANDS),
                        help="which of dedup,nd_cl,cl_nd (default all three)")
    parser.add_argument("--k1", type=int, default=4)
    parser.add_argument("--k2", type=int, default=2)
    parser.add_argument("--baseline-ref", help="also measure the code of this git ref")
    parser.add_argument("--baseline-code", type=Path, help="also measure this checkout")
    parser.add_argument("--baseline-only", action="store_true",
                        help="measure only the baseline")
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS,
                        help="report file (default benchmarks/results-shuffle-bytes.txt); "
                        "JSON beside it")
    args = parser.parse_args(argv)
    commands = [c.strip() for c in args.commands.split(",") if c.strip()]
    unknown = sorted(set(commands) - set(COMMANDS))
    if unknown:
        parser.error(f"unknown command(s) {unknown}; choose from {', '.join(COMMANDS)}")
    args.commands = commands
    if args.baseline_ref and args.baseline_code:
        parser.error("give --baseline-ref or --baseline-code, not both")
    if args.baseline_only and not (args.baseline_ref or args.baseline_code):
        parser.error("--baseline-only needs --baseline-ref or --baseline-code")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.probe is not None:
        return probe_main(json.loads(args.probe))
    inputs = [str(Path(path).resolve()) for path in args.input]
    missing = [path for path in inputs if not Path(path).is_file()]
    if missing:
        raise SystemExit(f"error: no such input: {', '.join(missing)}")
    results: dict[str, dict[str, Any]] = {}
    trees: dict[str, str] = {}
    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="ndcl-shuffle-bytes-") as tmp:
        scratch = Path(tmp)
        with baseline_tree(args, scratch) as baseline:
            codes: list[tuple[str, Path]] = []
            if baseline is not None:
                codes.append(("baseline", baseline[0]))
                trees["baseline"] = baseline[1]
            if not args.baseline_only:
                codes.append(("current", REPO_ROOT))
                trees["current"] = str(REPO_ROOT)
            for code, tree in codes:
                results[code] = {}
                for command in args.commands:
                    result = run_probe(code, tree, command, inputs, scratch, args)
                    results[code][command] = result
                    if result.get("status") != 0:
                        failures.append(f"{code} {command}: {result.get('error', '')}")
    lines = [f"{code}: {where}" for code, where in trees.items()]
    lines += [f"input: {', '.join(inputs)}", ""]
    for code, by_command in results.items():
        for command, result in by_command.items():
            if result.get("status") == 0:
                lines += [*format_table(code, command, result), ""]
                result["totals"] = totals(result)
    header = (f"{'code':<10}{'command':<8}{'shuffles':>9}{'B/doc':>10}{'text shuffles':>15}"
              f"{'text B/doc':>12}{'side-input B/doc':>18}")
    lines += ["summary (bytes per document read):", header, "-" * len(header)]
    for code, by_command in results.items():
        for command, result in by_command.items():
            if "totals" not in result:
                lines.append(f"{code:<10}{command:<8}  FAILED")
                continue
            t = result["totals"]
            lines.append(f"{code:<10}{command:<8}{t['shuffles']:>9}"
                         f"{t['shuffle_bytes_per_doc']:>10,.1f}{t['text_shuffles']:>15}"
                         f"{t['text_shuffle_bytes_per_doc']:>12,.1f}"
                         f"{t['side_input_bytes_per_doc']:>18,.1f}")
    lines += ["", "(bytes: key + value of each element as encoded by the PCollection's coders, "
              "exact, counted where the FnApiRunner hands them to the grouping buffer; "
              "text: some element holds document text; a '<CombinePerKey>/Group' receives "
              "lifted partial accumulators)"]
    for failure in failures:
        # The command, then the last line of its traceback (the exception).
        parts = [line for line in failure.splitlines() if line.strip()]
        lines.append(f"FAILED {parts[0].split(':')[0]}: {parts[-1].strip() if parts else ''}")
    report = "\n".join(lines)
    print(report)
    if failures:
        print("\n".join(failures), file=sys.stderr)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(report + "\n")
    args.results.with_suffix(".json").write_text(json.dumps(
        {"trees": trees, "inputs": inputs, "k1": args.k1, "k2": args.k2,
         "results": results}, indent=2) + "\n")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
