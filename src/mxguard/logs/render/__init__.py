"""Renderers: each takes the report dict and returns text (or prints, for rich)."""
