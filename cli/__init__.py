"""Command-line front end: the ``otseg`` Click group.

OpenMP threads waiting at a barrier sleep instead of spinning (``OMP_WAIT_POLICY=PASSIVE``, unless the user set it):
a multi-threaded command sharing its cores with other work otherwise slows down many times over, each operation
waiting for the thread that lost its core. It must be set before torch is imported, hence here.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
