"""Off-policy evaluation: the shared interval type and episode padding (estimate.py), behaviour-density estimate
(behaviour.py), WIS/PDWIS (wis.py), fitted Q evaluation (fqe.py), per-decision DR/WDR (dr.py), per-stay bootstrap
(bootstrap.py) and the ``fit-behaviour``, ``simulate-truth`` and ``evaluate`` stages (stage.py). See
docs/policies-and-ope.md."""
