"""Prefect flows (orchestration only; the work happens in `ogsrl <stage>`)."""
