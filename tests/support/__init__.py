"""Helpers shared by the test modules (media probes, loopback servers, synthetic media)."""
