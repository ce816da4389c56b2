"""mxguard: one policy and one shared state for a domain's whole MX tier."""

__version__ = "0.1.0"
