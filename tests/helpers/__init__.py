"""Test helpers: real servers on loopback that the suites share."""
