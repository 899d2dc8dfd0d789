"""Flex Template entry point (``FLEX_TEMPLATE_PYTHON_PY_FILE``): ``ndcl run`` with the
launcher's arguments.

The Dataflow launcher starts ``python main.py --workflow=nd_cl --input=gs://... --project=...
--region=... --temp_location=... ...``: the template parameters (``metadata.json``) plus the
pipeline options it adds. :func:`runners.dataflow.template.template_argv` maps the parameters
onto the CLI's flags (``--num_perm`` → ``--num-perm``) and passes the rest to Beam. Locally,
for a check without Cloud: ``python runners/dataflow/main.py --input=data/demo/*.json.gz
--output=/tmp/out --runner=direct``.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from beam_pipeline.cli import main as ndcl_main
    from runners.dataflow.template import template_argv

    return ndcl_main(["run", *template_argv(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
