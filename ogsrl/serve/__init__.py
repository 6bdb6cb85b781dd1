"""Local HTTP serving of the registered policy bundle (`ogsrl serve`); see :mod:`ogsrl.serve.server`."""
