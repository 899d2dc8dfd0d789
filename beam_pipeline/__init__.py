"""NDCL pipeline package: options, configuration, ``build_pipeline`` and the ``ndcl`` CLI."""

__version__ = "0.1.0"
