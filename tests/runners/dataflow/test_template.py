"""The Flex Template (``runners.dataflow.template``): the shipped files check out, broken ones
fail, its parameters are NDCL's options one for one, the launcher's argv maps onto ``ndcl
run``'s flags, and the build/run commands (accepted by gcloud when it is installed)."""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from beam_pipeline.cli_parser import build_parser
from beam_pipeline.options import option_names
from runners.dataflow import template
from runners.dataflow.template import METADATA, check_template
from tests.conftest import REPO


@pytest.fixture(autouse=True)
def no_flink_jar(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Runner flags must not depend on whether ``make flink`` ran on this machine."""
    monkeypatch.setenv("NDCL_FLINK_DIR", str(tmp_path / "no-flink"))


def test_shipped_template_checks_out() -> None:
    assert template.check_template(template.METADATA, template.SETUP_PY) == []
    names = {p["name"] for p in json.loads(template.METADATA.read_text())["parameters"]}
    assert {"workflow", "input", "output", "threshold", "num_perm", "ngram", "k1", "k2",
            "dedup_scope", "bands", "rows", "verify", "sample_size", "n_components",
            "service_address", "kmeans_backend"} <= names


def _broken(tmp_path: Path, edit_meta: object = None, dockerfile: str | None = None) -> Path:
    meta = json.loads(template.METADATA.read_text())
    if callable(edit_meta):
        edit_meta(meta)
    folder = tmp_path / "tpl"
    folder.mkdir(exist_ok=True)
    (folder / "metadata.json").write_text(json.dumps(meta))
    (folder / "Dockerfile").write_text(dockerfile or template.DOCKERFILE.read_text())
    return folder / "metadata.json"


def _param(meta: dict, name: str) -> dict:
    return next(p for p in meta["parameters"] if p["name"] == name)


@pytest.mark.parametrize(("edit", "dockerfile_edit", "message"), [
    (lambda m: m["parameters"].append({**_param(m, "ngram"), "name": "num_perms"}), None,
     "parameter 'num_perms': no `ndcl run` flag --num-perms"),
    (lambda m: _param(m, "threshold").update(regexes=["^(0\\.[0-9]+$"]), None,
     "parameter 'threshold': regex '^(0\\\\.[0-9]+$' does not compile"),
    (None, ("2.77.0", "2.76.0"), "Beam SDK image 2.76.0 but setup.py BEAM_VERSION is 2.77.0"),
    (None, ("python311-template", "python312-template"),
     "launcher for python312 but SDK image for Python 3.11"),
    (lambda m: m["parameters"].remove(_param(m, "input")), None,
     "`ndcl run` requires --input but metadata has no 'input'"),
    (lambda m: _param(m, "output").update(isOptional=True), None,
     "--output is required by `ndcl run`, so isOptional must be false"),
    (lambda m: _param(m, "k1").update(helptext="typo", helpText=""), None,
     "unknown key 'helptext'"),
    (lambda m: _param(m, "k1").update(defaultValue="ten"), None,
     "defaultValue 'ten' does not match"),
    (lambda m: m["parameters"].append(dict(_param(m, "k1"))), None, "'k1': duplicate name"),
    (lambda m: _param(m, "k2").pop("isOptional"), None, "isOptional must be true or false"),
])
def test_broken_template_fails(tmp_path: Path, edit: object,
                               dockerfile_edit: tuple[str, str] | None, message: str) -> None:
    dockerfile = template.DOCKERFILE.read_text()
    if dockerfile_edit:
        dockerfile = dockerfile.replace(*dockerfile_edit)
    errors = template.check_template(_broken(tmp_path, edit, dockerfile), template.SETUP_PY)
    assert any(message in e for e in errors), errors


def test_template_argv_maps_parameters_onto_cli_flags() -> None:
    argv = ["--workflow=cl_nd", "--input=gs://b/c4/*.json.gz", "--output=gs://b/out",
            "--num_perm=128", "--dedup_scope=cluster_B", "--balanced=true", "--k1=20",
            "--project=p", "--temp_location=gs://b/tmp", "--template_location=gs://b/job",
            "--sdk_container_image=img"]
    out = template.template_argv(argv)
    assert out[:7] == ["--workflow=cl_nd", "--input=gs://b/c4/*.json.gz",
                       "--output=gs://b/out", "--num-perm=128", "--dedup-scope=cluster_B",
                       "--balanced", "--k1=20"]
    # Beam options the launcher adds pass through; Dataflow and the local backend by default.
    assert "--template_location=gs://b/job" in out and "--project=p" in out
    assert out[-2:] == ["--runner=DataflowRunner", "--kmeans-backend=local"]
    assert "--balanced" not in template.template_argv(["--balanced=false"])
    kept = template.template_argv(["--service_address=ray://h:10001", "--runner=direct"])
    assert kept == ["--service-address=ray://h:10001", "--runner=direct"]


def test_template_argv_respects_a_preset_with_a_service(tmp_path: Path) -> None:
    with_service = tmp_path / "ray.yaml"
    with_service.write_text("cluster:\n  backend: ray\n  service_address: ray://h:10001\n")
    without = tmp_path / "plain.yaml"
    without.write_text("cluster:\n  k1: 4\n")
    assert "--kmeans-backend=local" not in template.template_argv([f"--config={with_service}"])
    assert "--kmeans-backend=local" in template.template_argv([f"--config={without}"])


def test_build_and_run_commands() -> None:
    image = "us-central1-docker.pkg.dev/p/ndcl/ndcl:2.77.0"
    assert template.build_command(image, "my-bucket") == [
        "gcloud", "dataflow", "flex-template", "build", "gs://my-bucket/templates/ndcl.json",
        "--image", image, "--sdk-language", "PYTHON", "--metadata-file",
        "runners/dataflow/metadata.json"]
    with pytest.raises(ValueError, match="gs://"):
        template.build_command(image, template_path="/local/ndcl.json")
    runs = template.run_commands("gs://my-bucket/templates/ndcl.json", image,
                                 "gs://my-bucket/c4/*.json.gz", "gs://my-bucket/ndcl",
                                 "us-central1", project="p", bucket="my-bucket",
                                 stamp="20260101-000000",
                                 extra_parameters={"input": "gs://a/*.json,gs://b/*.json"})
    assert [cmd[4] for cmd in runs] == ["ndcl-nd-cl-20260101-000000",
                                        "ndcl-cl-nd-20260101-000000"]
    for workflow, cmd in zip(("nd_cl", "cl_nd"), runs):
        params = [cmd[i + 1] for i, part in enumerate(cmd) if part == "--parameters"]
        assert f"workflow={workflow}" in params
        assert f"output=gs://my-bucket/ndcl/{workflow}" in params
        assert f"sdk_container_image={image}" in params
        assert "^~^input=gs://a/*.json,gs://b/*.json" in params  # gcloud's comma escape
        assert cmd[:4] == ["gcloud", "dataflow", "flex-template", "run"]
        assert "--template-file-gcs-location" in cmd and "--temp-location" in cmd
        # Every parameter is declared in metadata.json or is the Beam image option.
        declared = {p["name"] for p in json.loads(template.METADATA.read_text())["parameters"]}
        assert {p.split("=", 1)[0].removeprefix("^~^") for p in params} <= declared | {
            "sdk_container_image"}


def test_template_cli_prints_commands(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="ndcl")
    template.add_template_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["template", "build", "--print-only", "--image", "img:1",
                              "--bucket", "bkt", "--project", "prj"])
    assert template.run_template_command(args) == 0
    out = capsys.readouterr().out
    assert "gcloud dataflow flex-template build gs://bkt/templates/ndcl.json" in out
    assert "--metadata-file runners/dataflow/metadata.json" in out
    assert out.count("gcloud dataflow flex-template run") == 2
    assert "--parameters workflow=nd_cl" in out and "--parameters workflow=cl_nd" in out
    args = parser.parse_args(["template", "check"])
    assert template.run_template_command(args) == 0


def test_template_cli_fails_on_a_broken_template(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    broken = _broken(tmp_path, lambda m: m["parameters"].append(
        {**_param(m, "k1"), "name": "no_such_flag"}))
    parser = argparse.ArgumentParser(prog="ndcl")
    template.add_template_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["template", "build", "--print-only", "--metadata-file",
                              str(broken)])
    assert template.run_template_command(args) == 1
    captured = capsys.readouterr()
    assert "no_such_flag" in captured.err and "gcloud" not in captured.out


GCLOUD = shutil.which("gcloud")


def _gcloud(tmp_path: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    # A fresh, empty gcloud config: no account, no project, no metadata-server probe.
    env = {**os.environ, "CLOUDSDK_CONFIG": str(tmp_path / "gcloud"),
           "CLOUDSDK_CORE_DISABLE_PROMPTS": "1", "CLOUDSDK_CORE_CHECK_GCE_METADATA": "false",
           "CLOUDSDK_CORE_DISABLE_USAGE_REPORTING": "true"}
    return subprocess.run([GCLOUD or "gcloud", *argv], env=env, capture_output=True, text=True,
                          timeout=120, cwd=REPO)


@pytest.mark.skipif(GCLOUD is None, reason="gcloud is not installed")
def test_gcloud_accepts_the_template(tmp_path: Path) -> None:
    """gcloud's own validation of metadata.json (``--print-only`` writes nothing and needs no
    credentials), and the flags our run commands use exist in ``flex-template run``."""
    build = template.build_command("us-central1-docker.pkg.dev/p/r/ndcl:2.77.0", "bkt")
    done = _gcloud(tmp_path, *build[1:], "--print-only")
    assert done.returncode == 0, done.stderr
    spec = json.loads(done.stdout.strip().removeprefix("|-"))
    assert spec["sdkInfo"] == {"language": "PYTHON"}
    assert spec["metadata"] == json.loads(template.METADATA.read_text())
    help_text = re.sub(r"\x1b\[[0-9;]*m", "", _gcloud(
        tmp_path, "dataflow", "flex-template", "run", "--help").stdout)
    run = template.run_commands("gs://b/t.json", "img", "gs://b/in", "gs://b/out", "r",
                                project="p", bucket="b", max_workers=5,
                                worker_machine_type="n2-standard-4")[0]
    for flag in {part for part in run if part.startswith("--")} - {"--project"}:
        assert f"{flag}=" in help_text, flag


def test_template_parameters_are_the_option_names_one_for_one() -> None:
    names = [p["name"] for p in json.loads(METADATA.read_text())["parameters"]]
    assert len(names) == len(set(names))
    assert set(names) == set(option_names())
    assert check_template() == []


def test_template_check_names_a_missing_or_extra_parameter(tmp_path: Path) -> None:
    meta = json.loads(METADATA.read_text())
    meta["parameters"] = [p for p in meta["parameters"] if p["name"] != "kmeans_tol"]
    meta["parameters"].append({**meta["parameters"][0], "name": "runner"})
    broken = tmp_path / "metadata.json"
    broken.write_text(json.dumps(meta))
    errors = check_template(broken, dockerfile=METADATA.parent / "Dockerfile")
    assert "NDCL option 'kmeans_tol' has no parameter (the parameters are the options, one " \
           "for one)" in errors
    assert "parameter 'runner' is no NDCL pipeline option (beam_pipeline.options)" in errors


def test_template_reads_run_flags_with_their_aliases() -> None:
    from runners.dataflow.template import run_flags

    flags = run_flags()
    assert flags["--num-perm"].option == "--num-perm" and "--num_perm" in flags
    assert flags["--input"].required and not flags["--balanced"].takes_value
    sub = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert all(not p.allow_abbrev for p in sub.values())
