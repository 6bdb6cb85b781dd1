"""Off-policy evaluation: behaviour-density estimate (behaviour.py), WIS/PDWIS estimators (wis.py), per-stay
bootstrap (bootstrap.py) and the ``evaluate`` stage (stage.py). See docs/policies-and-ope.md."""
