"""mxguard: one policy and one shared state for a domain's whole MX tier."""

from mxguard import compiled as _compiled  # before any compiled module: see compiled.py

__version__ = "0.1.0"
COMPILED = _compiled.STATUS
