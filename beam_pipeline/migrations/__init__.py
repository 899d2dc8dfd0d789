"""Alembic migrations of the benchmark database (``beam_pipeline.db``).

``beam_pipeline.db`` runs ``upgrade head`` from here whenever it opens a database, configured
from code, so nothing but this folder is needed at runtime.  New revisions, from the
repository root (``alembic.ini`` there points at this folder)::

    .venv/bin/alembic revision --autogenerate --rev-id 0002 -m "what changed"

then review the generated file in ``versions/``.  ``tests/test_db.py`` checks that the
migrated schema matches the models on SQLite and PostgreSQL.
"""
