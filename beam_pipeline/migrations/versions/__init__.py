"""Alembic revision files (loaded by Alembic by path; this file only makes them ship)."""
