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
    distributed.leave()
    sys.exit(0)
time.sleep(1.0)
code = 0
try:
    group.all_reduce_values([1.0, 0.0, 0.0])
    print("no error")
except RuntimeFailure as failure:
    print(f"error: {failure}")
    code = failure.exit_code
finally:
    # as the CLI does (cli._run_stage): a group left to the interpreter's exit can end in gloo's
    # "terminate called without an active exception" (SIGABRT) instead of the exit code
    distributed.leave()
sys.exit(code)
