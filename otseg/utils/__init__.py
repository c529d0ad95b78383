"""Helpers shared by the engine, the demo and the command line: weight files, progress bars and pictures."""
