"""Names registered models of earlier versions still import (moved 2026-12-03; new code imports the new modules).

A model version logged before the split runs ``from ogsrl.registry.model import OgsrlPolicyModel`` in its MLflow
entry script, and its ``bundle.json`` names ``ogsrl.registry.model:load_guardian`` / ``:load_cost_model``: both must
keep loading so that a deployed policy's lineage can be audited.
"""

from ogsrl.registry.bundle import build_bundle, load_bundle
from ogsrl.registry.loaders import load_cost_model, load_guardian, resolve_loader
from ogsrl.registry.pyfunc import OgsrlPolicyModel, log_bundle
from ogsrl.registry.recommender import Recommender

__all__ = ["OgsrlPolicyModel", "Recommender", "build_bundle", "load_bundle", "load_cost_model", "load_guardian",
           "log_bundle", "resolve_loader"]
