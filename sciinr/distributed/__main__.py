"""`python -m sciinr.distributed --processes N script.py ...`"""

import signal
import sys

from ._launch import main


def _interrupt(signum, frame):
    raise KeyboardInterrupt  # stop the processes we started on the way out


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _interrupt)
    sys.exit(main())
