"""Run several ``medcondense`` commands one after another in one fresh process.

The torchrun tests compare each launch with "the same command without torchrun". Started as
separate processes, those one-process runs cost the machine one torch import each (about 4 s of
CPU, more than the tiny runs themselves); this runner pays it once. Each command goes through
the console script's entry point (``medcondense.cli.main``, as ``python -m medcondense`` does),
in its own working directory, with its stdout and stderr redirected at the file-descriptor level
to files of its own, so nothing of one command reaches another's output. A command that depended
on what an earlier one left in the process would show as a difference from the torchrun ranks,
which are fresh processes: the comparisons would fail, never pass by accident.

usage: python plain_runner.py RESULTS_DIR, with one job a line on stdin,
``{"name": ..., "cwd": ..., "args": [...]}``, run in the order they come until stdin ends (the
tests queue the resumes after an interruption while the runner is running). For each job it
writes ``NAME.out`` and ``NAME.err``, then ``NAME.rc`` (its exit code, written last and
atomically: a poller that sees it can read the other two).
"""

import json
import os
import sys
from pathlib import Path


def run_one(args: list[str], cwd: str, out: Path, err: Path) -> int:
    """``medcondense ARGS`` in ``cwd`` with fd 1 and 2 going to ``out`` and ``err``; its exit code."""
    from medcondense import cli

    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    here = os.getcwd()
    with open(out, "wb") as out_file, open(err, "wb") as err_file:
        os.dup2(out_file.fileno(), 1)
        os.dup2(err_file.fileno(), 2)
        try:
            os.chdir(cwd)
            sys.argv = ["medcondense", *args]
            cli.main()
            code = 0
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.chdir(here)
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
    return code


def main() -> int:
    results = Path(sys.argv[1])
    for line in sys.stdin:
        job = json.loads(line)
        name = job["name"]
        code = run_one(job["args"], job["cwd"], results / f"{name}.out", results / f"{name}.err")
        partial = results / f"{name}.rc.partial"
        partial.write_text(str(code))
        os.replace(partial, results / f"{name}.rc")
    return 0


if __name__ == "__main__":
    sys.exit(main())
