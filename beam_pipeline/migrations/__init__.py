"""Alembic migrations of the benchmark database (``beam_pipeline.db``).

``beam_pipeline.db`` runs ``upgrade head`` from here whenever it opens a database, configured
from code, so nothing but this folder is needed at runtime.  New revisions, from the
repository root (``alembic.ini`` there points at this folder)::

    .venv/bin/alembic revision --autogenerate --rev-id 0002 -m "what changed"

then review the generated file in ``versions/``, and set ``HEAD_REVISION`` below to the new
id.  ``tests/beam_pipeline/test_db.py`` checks that the migrated schema matches the models on
SQLite and PostgreSQL, and that ``HEAD_REVISION`` is Alembic's head.
"""

# The newest revision: a database already there is opened without importing Alembic at all
# (its import and the revision walk cost ~0.4 s at the end of every run).
HEAD_REVISION = "0001"
