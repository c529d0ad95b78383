"""Command-line front end: the ``otseg`` Click group."""
