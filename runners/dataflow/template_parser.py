"""The ``ndcl template check|build`` flags.

Apart from ``runners.dataflow.template`` because that module reads the CLI's own parser
(``beam_pipeline.cli_parser.build_parser``) to check ``metadata.json`` against ``ndcl run``,
while ``build_parser`` adds these flags: with both in one module the two would import each
other. This module imports neither.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
METADATA = HERE / "metadata.json"
SETUP_PY = HERE.parents[1] / "setup.py"
# The first paragraph of runners.dataflow.template's docstring (argparse reflows it).
DESCRIPTION = ("The ``ndcl`` Dataflow Flex Template: checks, the launcher's argument "
               "translation, and the ``gcloud`` commands that build and run it.")


def add_template_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``template check|build`` to an ``add_subparsers()`` object."""
    template = subparsers.add_parser(
        "template", help="check the Dataflow Flex Template and print its gcloud commands",
        description=DESCRIPTION)
    actions = template.add_subparsers(dest="template_command", required=True, metavar="ACTION")
    check = actions.add_parser("check", help="validate metadata.json, Dockerfile, setup.py")
    build = actions.add_parser("build", help="check, then print the image build, template "
                                             "build and run commands (never runs them)")
    for sub in (check, build):
        sub.add_argument("--metadata-file", default=str(METADATA), metavar="PATH",
                         help="the template's metadata.json (default: %(default)s)")
        sub.add_argument("--setup-file", default=str(SETUP_PY), metavar="PATH",
                         help="the setup.py the image installs (default: %(default)s)")
    build.add_argument("--print-only", action="store_true",
                       help="print the commands without the reminder line (ndcl never "
                            "runs gcloud either way) (default: off)")
    build.add_argument("--image", default="REGION-docker.pkg.dev/PROJECT/REPOSITORY/ndcl:TAG",
                       help="Artifact Registry image of runners/dataflow/Dockerfile "
                            "(default: %(default)s)")
    build.add_argument("--bucket", default="BUCKET",
                       help="bucket for temp/staging files (default: %(default)s)")
    build.add_argument("--template-path", default=None, metavar="GS_PATH",
                       help="gs:// path of the template spec (default: "
                            "gs://BUCKET/templates/ndcl.json)")
    build.add_argument("--project", default=None,
                       help="Google Cloud project (default: none, gcloud's configured one)")
    build.add_argument("--region", default="us-central1",
                       help="Dataflow region (default: %(default)s)")
    build.add_argument("--input", default=None, metavar="PATTERN",
                       help="input pattern for the run commands (default: "
                            "gs://BUCKET/input/*)")
    build.add_argument("--output-prefix", default=None, metavar="PREFIX",
                       help="outputs go to PREFIX/nd_cl and PREFIX/cl_nd (default: "
                            "gs://BUCKET/ndcl)")
    return template
