"""The cross-MX walk check: sightings, liveness, the blocklist, and their CLI (docs/walk.md)."""
