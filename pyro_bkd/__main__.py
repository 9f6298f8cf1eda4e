"""``python -m pyro_bkd``: the ``pyro-bkd`` command, also as torchrun's entry point
(``torchrun --nproc_per_node=K -m pyro_bkd fit ...``)."""

import sys

from pyro_bkd.cli import main

if __name__ == "__main__":
    sys.exit(main())
