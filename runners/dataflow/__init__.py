"""Google Cloud Dataflow: the Flex Template (``Dockerfile``, ``main.py``, ``metadata.json``,
:mod:`runners.dataflow.template`) and an offline dry run of the job
(:mod:`runners.dataflow.dry_run`). See ``runners/dataflow/README.md``."""
