"""One thread per process for torch and for numpy's BLAS.

Ray runs one client actor per core, and the server loop shares the cores with them: a
library that splits one small operation over several threads then waits for a core the
other processes hold (numpy's multithreaded dot product took ~6 ms instead of 0.05 ms
for a 362k-parameter update norm on two busy cores).
"""

from __future__ import annotations


def use_one_thread() -> None:
    """Limit torch and the BLAS behind numpy to one thread in this process."""
    import threadpoolctl
    import torch

    torch.set_num_threads(1)
    threadpoolctl.threadpool_limits(limits=1, user_api="blas")
