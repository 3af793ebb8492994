"""HDF5 run files and checkpoints, readable with plain `h5py`."""

from ._atomic import atomic_h5 as atomic_h5
from ._checkpoint import (
    Checkpoint as Checkpoint,
    CheckpointError as CheckpointError,
    load_checkpoint as load_checkpoint,
    save_checkpoint as save_checkpoint,
)
from ._run import (
    load_run as load_run,
    read_run as read_run,
    Run as Run,
    save_run as save_run,
    write_run as write_run,
)
