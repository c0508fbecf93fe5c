"""Prefect flows built from carp declarations (imports prefect: load lazily)."""
