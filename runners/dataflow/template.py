"""The ``ndcl`` Dataflow Flex Template: checks, the launcher's argument translation, and the
``gcloud`` commands that build and run it.

    ndcl template check                       # metadata.json vs the CLI, Dockerfile vs setup.py
    ndcl template build --print-only --image REGION-docker.pkg.dev/P/REPO/ndcl:2.77.0 \\
        --template-path gs://BUCKET/templates/ndcl.json [--project P --region R \\
        --bucket BUCKET --input 'gs://BUCKET/c4/*.json.gz']

``build`` runs :func:`check_template` and prints the image build, the ``gcloud dataflow
flex-template build`` and one ``gcloud dataflow flex-template run`` per ordering (``nd_cl``,
``cl_nd``). It never executes them: building needs Docker and pushing and launching need
Google Cloud credentials, which belong to whoever runs the printed commands.

The template (files beside this module):

- ``Dockerfile``: one image for the launcher and the workers: ``apache/beam_python3.11_sdk``
  of setup.py's ``BEAM_VERSION`` with the Flex Template launcher binary copied in and the
  package installed; ``FLEX_TEMPLATE_PYTHON_PY_FILE`` = ``main.py``,
  ``FLEX_TEMPLATE_PYTHON_SETUP_FILE`` = the repository's ``setup.py``.
- ``main.py``: calls ``ndcl run`` with the launcher's arguments, translated by
  :func:`template_argv`.
- ``metadata.json``: one parameter per NDCL pipeline option (``beam_pipeline.options``: the
  run's own and every config field's), named as the option, which is the ``ndcl run`` flag
  with ``_`` for ``-`` (``num_perm`` is ``--num-perm``), each with label, helpText,
  isOptional and regexes. Beam's options (``--project``, ``--temp_location``, ...) are the
  launcher's, not parameters.

Wiring: ``beam_pipeline.cli_parser.build_parser`` adds the flags
(``runners.dataflow.template_parser.add_template_parser``, apart so that building the parser
does not import this module, which reads that parser), and ``beam_pipeline.cli.main`` imports
this module only for ``ndcl template`` (``return run_template_command(args)``) and
``ndcl rerun --template-path``.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from beam_pipeline.cli_parser import build_parser, subparsers_action
from beam_pipeline.options import option_names

# add_template_parser is re-exported ("as"): callers keep finding the template command here.
from runners.dataflow.template_parser import METADATA, SETUP_PY
from runners.dataflow.template_parser import add_template_parser as add_template_parser

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
DOCKERFILE = HERE / "Dockerfile"
ORDERINGS = ("nd_cl", "cl_nd")

# Field names of the Dataflow API's TemplateMetadata and ParameterMetadata messages
# (dataflow v1b3); gcloud silently drops unknown keys, so a misspelt "helptext" would vanish.
TEMPLATE_KEYS = {"name", "description", "parameters", "streaming", "supportsAtLeastOnce",
                 "supportsExactlyOnce", "defaultStreamingMode", "yamlDefinition", "_comment"}
PARAMETER_KEYS = {"name", "label", "helpText", "isOptional", "regexes", "paramType",
                  "defaultValue", "enumOptions", "groupName", "parentName",
                  "parentTriggerValues", "hiddenUi", "customMetadata"}
PARAM_TYPES = {"DEFAULT", "TEXT", "GCS_READ_BUCKET", "GCS_WRITE_BUCKET", "GCS_READ_FILE",
               "GCS_WRITE_FILE", "GCS_READ_FOLDER", "GCS_WRITE_FOLDER", "PUBSUB_TOPIC",
               "PUBSUB_SUBSCRIPTION", "BIGQUERY_TABLE", "JAVASCRIPT_UDF_FILE",
               "SERVICE_ACCOUNT", "MACHINE_TYPE", "KMS_KEY_NAME", "WORKER_REGION",
               "WORKER_ZONE", "BOOLEAN", "ENUM", "NUMBER", "KAFKA_TOPIC", "KAFKA_READ_TOPIC",
               "KAFKA_WRITE_TOPIC"}
_PARAM_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


# --- the CLI's `run` parser ------------------------------------------------------------------


def run_parser() -> argparse.ArgumentParser:
    """The ``argparse`` parser of ``ndcl run``, as the CLI builds it."""
    commands = subparsers_action(build_parser())
    if commands is None or "run" not in commands.choices:
        raise RuntimeError("the ndcl parser has no 'run' command")
    return commands.choices["run"]


@dataclass(frozen=True)
class Flag:
    option: str  # the spelling the CLI accepts, e.g. --num-perm
    takes_value: bool
    required: bool


def run_flags(parser: argparse.ArgumentParser | None = None) -> dict[str, Flag]:
    """Every option string of ``ndcl run`` → :class:`Flag`."""
    parser = parser or run_parser()
    flags = {}
    for action in parser._actions:
        for option in action.option_strings:
            if option.startswith("--"):
                flags[option] = Flag(option, action.nargs != 0, bool(action.required))
    return flags


def flag_for(name: str, flags: dict[str, Flag]) -> Flag | None:
    """The ``ndcl run`` flag that template parameter ``name`` stands for: ``--name`` with
    ``-`` for ``_`` (``num_perm`` → ``--num-perm``), or ``--name`` itself."""
    return flags.get("--" + name.replace("_", "-")) or flags.get("--" + name)


# --- checks ----------------------------------------------------------------------------------


def beam_version_of_setup(setup_py: Path | str) -> str | None:
    """``BEAM_VERSION`` as assigned in ``setup.py`` (read, not executed)."""
    tree = ast.parse(Path(setup_py).read_text())
    for node in ast.walk(tree):
        if (isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and
                                                 t.id == "BEAM_VERSION" for t in node.targets)
                and isinstance(node.value, ast.Constant)):
            return str(node.value.value)
    return None


def _check_parameter(i: int, param: Any, flags: dict[str, Flag], seen: set[str]
                     ) -> list[str]:
    if not isinstance(param, dict):
        return [f"parameters[{i}] is not an object"]
    name = param.get("name")
    where = f"parameter {name!r}" if isinstance(name, str) else f"parameters[{i}]"
    errors = [f"{where}: unknown key {key!r} (Dataflow ignores it)"
              for key in sorted(set(param) - PARAMETER_KEYS)]
    if not isinstance(name, str) or not _PARAM_NAME.match(name):
        return [*errors, f"{where}: name must be a letter then letters, digits or _"]
    if name in seen:
        errors.append(f"{where}: duplicate name")
    seen.add(name)
    for key in ("label", "helpText"):
        if not isinstance(param.get(key), str) or not param[key].strip():
            errors.append(f"{where}: {key} must be a non-empty string")
    if not isinstance(param.get("isOptional"), bool):
        errors.append(f"{where}: isOptional must be true or false")
    if "paramType" in param and param["paramType"] not in PARAM_TYPES:
        errors.append(f"{where}: unknown paramType {param['paramType']!r}")
    regexes = param.get("regexes")
    compiled = []
    if not isinstance(regexes, list) or not regexes:
        errors.append(f"{where}: regexes must be a non-empty list")
    else:
        for regex in regexes:
            try:
                compiled.append(re.compile(regex))
            except (re.error, TypeError) as exc:
                errors.append(f"{where}: regex {regex!r} does not compile: {exc}")
    default = param.get("defaultValue")
    if isinstance(default, str) and compiled and not all(r.search(default) for r in compiled):
        errors.append(f"{where}: defaultValue {default!r} does not match its regexes")
    flag = flag_for(name, flags)
    if flag is None:
        errors.append(f"{where}: no `ndcl run` flag --{name.replace('_', '-')} "
                      f"(nor --{name})")
    elif flag.required and param.get("isOptional") is not False:
        errors.append(f"{where}: {flag.option} is required by `ndcl run`, so isOptional must "
                      "be false")
    return errors


def _check_dockerfile(dockerfile: Path, setup_py: Path) -> list[str]:
    if not dockerfile.is_file():
        return [f"{dockerfile} does not exist"]
    text = dockerfile.read_text()
    errors = []
    sdk = re.search(r"apache/beam_python(3\.\d+)_sdk:(\S+)", text)
    launcher = re.search(r"dataflow-templates-base/python(3\d+)-template-launcher-base", text)
    version = beam_version_of_setup(setup_py)
    if sdk is None:
        errors.append(f"{dockerfile.name}: no apache/beam_python3.X_sdk:VERSION base image")
    elif version is None:
        errors.append(f"{setup_py}: no BEAM_VERSION = '...' assignment")
    elif sdk.group(2) != version:
        errors.append(f"{dockerfile.name}: Beam SDK image {sdk.group(2)} but setup.py "
                      f"BEAM_VERSION is {version}; workers and launcher must run the same Beam")
    if launcher is None:
        errors.append(f"{dockerfile.name}: the Flex Template launcher "
                      "(gcr.io/dataflow-templates-base/python3XX-template-launcher-base) "
                      "is not copied in")
    elif sdk is not None and launcher.group(1) != sdk.group(1).replace(".", ""):
        errors.append(f"{dockerfile.name}: launcher for python{launcher.group(1)} but SDK "
                      f"image for Python {sdk.group(1)}")
    for env in ("FLEX_TEMPLATE_PYTHON_PY_FILE", "FLEX_TEMPLATE_PYTHON_SETUP_FILE"):
        if not re.search(rf"^\s*ENV\s+{env}=", text, re.M):
            errors.append(f"{dockerfile.name}: ENV {env}=... missing")
    main_py = re.search(r"FLEX_TEMPLATE_PYTHON_PY_FILE=\S*?/(runners/dataflow/main\.py)", text)
    if main_py is None or not (REPO / main_py.group(1)).is_file():
        errors.append(f"{dockerfile.name}: FLEX_TEMPLATE_PYTHON_PY_FILE must point at "
                      "runners/dataflow/main.py")
    return errors


def check_template(metadata_path: Path | str = METADATA, setup_py: Path | str = SETUP_PY,
                   dockerfile: Path | str | None = None) -> list[str]:
    """Problems with the Flex Template files (empty list: none).

    Checks the metadata fields against the Dataflow API's TemplateMetadata/ParameterMetadata
    (required name/label/helpText/isOptional, regexes that compile, defaults that match),
    that every parameter names an ``ndcl run`` flag and the required flags are required
    parameters, that the parameters are NDCL's pipeline options one for one, and that the
    Dockerfile (default: beside ``metadata_path``) uses the Beam version of ``setup.py``'s
    ``BEAM_VERSION`` and a launcher for the same Python.
    """
    metadata_path = Path(metadata_path)
    dockerfile = Path(dockerfile) if dockerfile else metadata_path.parent / "Dockerfile"
    try:
        meta = json.loads(metadata_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        return [f"{metadata_path}: {exc}"]
    if not isinstance(meta, dict):
        return [f"{metadata_path}: not a JSON object"]
    errors = [f"unknown top-level key {key!r}" for key in sorted(set(meta) - TEMPLATE_KEYS)]
    if not isinstance(meta.get("name"), str) or not meta["name"].strip():
        errors.append("name must be a non-empty string")
    if not isinstance(meta.get("description"), str):
        errors.append("description must be a string")
    params = meta.get("parameters")
    if not isinstance(params, list) or not params:
        return [*errors, "parameters must be a non-empty list"]
    flags = run_flags()
    seen: set[str] = set()
    for i, param in enumerate(params):
        errors += _check_parameter(i, param, flags, seen)
    for option, flag in sorted(flags.items()):
        name = option[2:].replace("-", "_")
        if flag.required and name not in seen:
            errors.append(f"`ndcl run` requires {option} but metadata has no {name!r}")
    options = option_names()
    errors += [f"parameter {name!r} is no NDCL pipeline option (beam_pipeline.options)"
               for name in sorted(seen - set(options))]
    errors += [f"NDCL option {name!r} has no parameter (the parameters are the options, one "
               "for one)" for name in options if name not in seen]
    return errors + _check_dockerfile(dockerfile, Path(setup_py))


# --- the launcher's arguments ----------------------------------------------------------------


def template_argv(argv: list[str], flags: dict[str, Flag] | None = None) -> list[str]:
    """The launcher's ``--name=value`` arguments as ``ndcl run`` arguments.

    Parameters come as ``--num_perm=256``; argparse would not match that to ``--num-perm``
    and pass it on to Beam, which drops it: the run would silently use the default. Boolean
    flags (``--balanced``) take no value, so ``--balanced=true`` becomes ``--balanced`` and
    ``false`` drops it. Unknown names (Beam options the launcher adds: ``--project``,
    ``--temp_location``, ``--template_location``, ...) pass unchanged. Two defaults differ
    from the CLI's because a launcher VM is not a workstation: the runner is Dataflow unless
    given, and unless the parameters or the ``--config`` preset name a K-Means backend with a
    service address, the backend is ``local`` (a Ray service started on the launcher would be
    unreachable from the workers).
    """
    flags = flags if flags is not None else run_flags()
    out: list[str] = []
    for arg in argv:
        name, eq, value = arg[2:].partition("=")
        flag = flag_for(name, flags) if arg.startswith("--") else None
        if flag is None:
            out.append(arg)
        elif not flag.takes_value:
            if not eq or value.strip().lower() in ("true", "1", "yes"):
                out.append(flag.option)
        else:
            out.append(f"{flag.option}={value}" if eq else flag.option)
    given = dict(a[2:].partition("=")[::2] for a in out if a.startswith("--"))
    if "runner" not in given:
        out.append("--runner=DataflowRunner")
    if _needs_local_backend(given):
        out.append("--kmeans-backend=local")
    return out


def _needs_local_backend(given: dict[str, str]) -> bool:
    """True when neither the parameters nor the ``--config`` preset choose a usable K-Means
    service (the CLI default ``ray`` without an address would start Ray on the launcher)."""
    if "kmeans-backend" in given or "service-address" in given:
        return False
    if given.get("config"):
        from beam_pipeline.config import ConfigError, load_cluster_config

        try:
            cfg = load_cluster_config(given["config"])
        except (ConfigError, OSError):
            return False  # let `ndcl run` report the bad preset
        return cfg.backend == "ray" and cfg.service_address is None
    return True


# --- gcloud commands -------------------------------------------------------------------------


def default_template_path(bucket: str) -> str:
    return f"gs://{bucket.removeprefix('gs://').rstrip('/')}/templates/ndcl.json"


def image_commands(image: str, project: str | None = None) -> list[list[str]]:
    """Build and push the template image: Cloud Build with ``cloudbuild.yaml`` (no local
    Docker needed), from the repository root so the Dockerfile can copy the package."""
    cmd = ["gcloud", "builds", "submit", "--config", "runners/dataflow/cloudbuild.yaml",
           "--substitutions", f"_IMAGE={image}"]
    if project:
        cmd += ["--project", project]
    return [[*cmd, "."]]


def build_command(image: str, bucket: str | None = None, *, template_path: str | None = None,
                  metadata_file: str = "runners/dataflow/metadata.json",
                  project: str | None = None) -> list[str]:
    """``gcloud dataflow flex-template build``: writes the template spec (image + metadata)
    to ``template_path`` (default ``gs://BUCKET/templates/ndcl.json``)."""
    if template_path is None:
        if bucket is None:
            raise ValueError("give bucket or template_path")
        template_path = default_template_path(bucket)
    if not template_path.startswith("gs://"):
        raise ValueError(f"template path must be gs://..., got {template_path!r}")
    cmd = ["gcloud", "dataflow", "flex-template", "build", template_path, "--image", image,
           "--sdk-language", "PYTHON", "--metadata-file", metadata_file]
    if project:
        cmd += ["--project", project]
    return cmd


def _job_name(workflow: str, stamp: str) -> str:
    # Dataflow job names: [a-z]([-a-z0-9]*[a-z0-9])?
    return f"ndcl-{workflow.replace('_', '-')}-{stamp}"


def run_commands(template_path: str, image: str, input_pattern: str, output_prefix: str,
                 region: str, project: str | None = None, bucket: str | None = None,
                 workflows: tuple[str, ...] = ORDERINGS, stamp: str | None = None,
                 extra_parameters: dict[str, str] | None = None,
                 max_workers: int | None = None, worker_machine_type: str | None = None
                 ) -> list[list[str]]:
    """One ``gcloud dataflow flex-template run`` per ordering, writing to
    ``OUTPUT_PREFIX/<workflow>``. ``sdk_container_image`` is the template image, so the
    workers run the code the launcher built the graph from."""
    stamp = stamp or time.strftime("%Y%m%d-%H%M%S")
    commands = []
    for workflow in workflows:
        if workflow not in ORDERINGS:
            raise ValueError(f"workflow must be one of {ORDERINGS}, got {workflow!r}")
        cmd = ["gcloud", "dataflow", "flex-template", "run", _job_name(workflow, stamp),
               "--template-file-gcs-location", template_path, "--region", region]
        if project:
            cmd += ["--project", project]
        if bucket:
            root = "gs://" + bucket.removeprefix("gs://").rstrip("/")
            cmd += ["--temp-location", f"{root}/tmp", "--staging-location", f"{root}/staging"]
        if max_workers:
            cmd += ["--max-workers", str(max_workers)]
        if worker_machine_type:
            cmd += ["--worker-machine-type", worker_machine_type]
        params = {"workflow": workflow, "input": input_pattern,
                  "output": f"{output_prefix.rstrip('/')}/{workflow}",
                  "kmeans_backend": "local", "sdk_container_image": image,
                  **(extra_parameters or {})}
        for key, value in params.items():
            # gcloud splits --parameters on commas; "^~^" switches the delimiter.
            cmd += ["--parameters", f"^~^{key}={value}" if "," in value else f"{key}={value}"]
        commands.append(cmd)
    return commands


# --- CLI ---------------------------------------------------------------------------------------


def run_template_command(args: argparse.Namespace) -> int:
    """Run ``ndcl template check|build``; 0 when the template checks out, 1 otherwise."""
    errors = check_template(args.metadata_file, args.setup_file)
    if errors:
        for error in errors:
            print(f"ndcl template: {error}", file=sys.stderr)
        return 1
    if args.template_command == "check":
        print(f"template OK: {args.metadata_file} matches `ndcl run`; Dockerfile and "
              f"setup.py agree on Beam {beam_version_of_setup(args.setup_file)}")
        return 0
    bucket = args.bucket.removeprefix("gs://").rstrip("/")
    template_path = args.template_path or default_template_path(bucket)
    image_cmds = image_commands(args.image, args.project)
    build = build_command(args.image, bucket, template_path=template_path,
                          project=args.project)
    runs = run_commands(template_path, args.image, args.input or f"gs://{bucket}/input/*",
                        args.output_prefix or f"gs://{bucket}/ndcl", args.region,
                        args.project, bucket, stamp="$(date +%Y%m%d-%H%M%S)")
    if not args.print_only:
        print("# (printing only: ndcl never runs gcloud; run these yourself)")
    print("# 1. build and push the image (launcher + workers), from the repository root")
    for cmd in image_cmds:
        print(_shell(cmd))
    print("# 2. write the template spec")
    print(_shell(build))
    labels = {"nd_cl": "ND→CL", "cl_nd": "CL→ND"}
    for step, (workflow, cmd) in enumerate(zip(ORDERINGS, runs), start=3):
        print(f"# {step}. run {workflow} ({labels[workflow]})")
        print(_shell(cmd))
    return 0


def _shell(cmd: list[str]) -> str:
    # Quote for a POSIX shell but leave the $(date ...) job-name suffix to the shell.
    parts = []
    for part in cmd:
        quoted = shlex.quote(part)
        if "$(date" in part:
            quoted = '"' + part + '"'
        parts.append(quoted)
    return " \\\n    ".join(_pairs(parts))


def _pairs(parts: list[str]) -> list[str]:
    """Keep ``--flag value`` on one line of the printed command."""
    lines: list[str] = []
    for part in parts:
        if lines and lines[-1].startswith("--") and " " not in lines[-1] and \
                not part.startswith("--"):
            lines[-1] += " " + part
        else:
            lines.append(part)
    head = []
    while lines and not lines[0].startswith("--"):
        head.append(lines.pop(0))
    return [" ".join(head), *lines] if head else lines
