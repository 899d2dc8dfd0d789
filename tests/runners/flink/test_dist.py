"""``runners.flink.dist``: the Flink distribution assembled from PyPI's two files."""

from __future__ import annotations

import io
import os
import tarfile
import zipfile
from pathlib import Path

import pytest

from runners.flink import dist


def test_assemble_flink_home_from_the_pypi_layout(tmp_path: Path) -> None:
    sdist = tmp_path / "apache-flink-libraries-1.19.3.tar.gz"
    with tarfile.open(sdist, "w:gz") as tar:
        for name in ("deps/lib/flink-dist-1.19.3.jar", "deps/opt/flink-python-1.19.3.jar",
                     "deps/bin/bash-java-utils.jar", "deps/plugins/metrics-jmx/m.jar",
                     "setup.py", "deps/../../escape.txt"):
            data = name.encode()
            info = tarfile.TarInfo(f"apache-flink-libraries-1.19.3/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    wheel = tmp_path / "apache_flink-1.19.3-cp311-cp311-manylinux2014_x86_64.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for name in ("pyflink/bin/jobmanager.sh", "pyflink/bin/taskmanager.sh",
                     "pyflink/bin/config.sh", "pyflink/conf/config.yaml",
                     "pyflink/table/t.py"):
            zf.writestr(name, "#!/bin/sh\n")
    home = tmp_path / "flink-1.19.3"
    dist.assemble_flink_home(sdist, wheel, home)
    files = sorted(str(p.relative_to(home)) for p in home.rglob("*") if p.is_file())
    assert files == ["bin/bash-java-utils.jar", "bin/config.sh", "bin/jobmanager.sh",
                     "bin/taskmanager.sh", "conf/config.yaml", "lib/flink-dist-1.19.3.jar",
                     "opt/flink-python-1.19.3.jar", "plugins/metrics-jmx/m.jar"]
    assert os.access(home / "bin" / "jobmanager.sh", os.X_OK)
    assert not os.access(home / "bin" / "bash-java-utils.jar", os.X_OK)
    assert (home / "log").is_dir()
    assert not (tmp_path / "escape.txt").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_assemble_refuses_an_incomplete_distribution(tmp_path: Path) -> None:
    sdist = tmp_path / "libs.tar.gz"
    with tarfile.open(sdist, "w:gz"):
        pass
    wheel = tmp_path / "w.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("pyflink/bin/config.sh", "")
    with pytest.raises(dist.FlinkSetupError, match="lib/flink-dist"):
        dist.assemble_flink_home(sdist, wheel, tmp_path / "flink")
    assert not (tmp_path / "flink").exists()
