"""Thin Prefect tasks, one per pipeline stage. They hold no logic: each calls :func:`tasks.common.execute`."""
