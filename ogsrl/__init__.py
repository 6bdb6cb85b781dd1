"""ogsrl: offline guarded safe reinforcement learning for ICU treatment, from raw EHR tables to a guarded policy."""

__version__ = "0.1.0"
