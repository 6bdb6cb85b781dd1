"""Fixtures for the agent tests (the generator lives in trajectory_fakes.py, shared with tests/ope)."""

from tests.agents.trajectory_fakes import one_thread, traj_root  # noqa: F401
