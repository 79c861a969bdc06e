"""One rank of a 2-process gloo group (started by test_distributed_unit.py without torchrun).

Rank 1 joins and exits at once; rank 0 joins, waits a moment and all-reduces: it must get
medcondense's clear RuntimeFailure (exit 1), never hang.
"""

import sys
import time

import torch

from medcondense import distributed
from medcondense.errors import RuntimeFailure

group = distributed.join(torch.device("cpu"))
if group.rank == 1:
    sys.exit(0)
time.sleep(1.0)
try:
    group.all_reduce_values([1.0, 0.0, 0.0])
except RuntimeFailure as failure:
    print(f"error: {failure}")
    sys.exit(failure.exit_code)
print("no error")
sys.exit(0)
