"""Multi-process runs with JAX's distributed runtime (`jax.distributed`).

- [`sciinr.distributed.initialize`][] joins this process to a run: from explicit
  arguments, from the variables `python -m sciinr.distributed` sets, or from the
  cluster (SLURM, Open MPI) as JAX detects it.
- `python -m sciinr.distributed --processes N script.py ...` (or
  [`sciinr.distributed.launch`][]) starts N local processes of a script on the CPU,
  to try a multi-process run on one machine.

See the "Scaling out" guide for what `sciinr.fit` shards and replicates.
"""

from ._initialize import initialize as initialize
from ._launch import free_port as free_port, launch as launch
