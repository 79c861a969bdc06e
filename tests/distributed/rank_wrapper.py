"""Run one ``medcondense`` worker under torchrun and record its exit code per rank.

torchrun reports no per-worker exit code when it is itself interrupted, so the tests start
``torchrun --no-python python rank_wrapper.py <rc_dir> <medcondense args>``: this wrapper runs
the real ``python -m medcondense`` worker in a session of its own, passes SIGINT on to it (the
interruption under test), ignores SIGTERM (torchrun terminates the remaining workers as soon as
one fails; shielding them shows that each rank exits with its own code, e.g. 2 for a usage
error, on its own), waits for it and writes its exit code to ``<rc_dir>/rank<RANK>.rc``.
"""

import os
import signal
import subprocess
import sys
from pathlib import Path


def _default_signals() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    rc_dir = Path(sys.argv[1])
    worker = subprocess.Popen([sys.executable, "-m", "medcondense", *sys.argv[2:]], preexec_fn=_default_signals,
                              start_new_session=True)
    signal.signal(signal.SIGINT, lambda signum, frame: worker.send_signal(signal.SIGINT))
    while True:
        try:
            code = worker.wait()
            break
        except InterruptedError:  # pragma: no cover - PEP 475 retries; kept for clarity
            continue
    (rc_dir / f"rank{os.environ.get('RANK', '0')}.rc").write_text(str(code))
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main())
