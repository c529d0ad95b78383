"""The optional compiled part of otkit: the CPU auction of ``otkit.couplings.linear_assignment``.

Everything else is in pyproject.toml. The extension is optional: where it cannot be compiled (no C compiler),
otkit installs without it and the torch auction serves the CPU as well.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("otkit.couplings._auction", sources=["couplings/_auction.c"], optional=True)])
