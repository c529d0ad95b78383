"""Command-line front ends: the ``otkit`` and ``otseg`` Click groups."""
