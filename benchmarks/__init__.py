"""Benchmarks of otkit and OTSeg: suites, measurement harness and the scripts that run them (not installed)."""
