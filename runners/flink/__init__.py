"""Flink without Docker: what ``make flink`` fetches (:mod:`runners.flink.dist`) and the Docker
compose kit for machines that have Docker (``runners/flink/README.md``)."""
