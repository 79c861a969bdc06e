#!/usr/bin/env python
"""Print the headline numbers of a pipeline run from its evaluate and score reports.

    python examples/pipeline/summary.py WORK/report.json WORK/score.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _pct(block: dict) -> str:
    return f"{100 * block['accuracy']['mean']:.1f} %"


def summarize(report: dict, score: dict) -> list[str]:
    """One line per evaluated set (vs random and full), and one for the privacy audit."""
    lines = []
    for r in report["results"]:
        line = f"{r['method']} IPC {r['ipc']}: accuracy {_pct(r['metrics'])}"
        baselines = r.get("baselines", {})
        if "random" in baselines:
            line += f" | random real subset {_pct(baselines['random']['metrics'])}"
        if "full" in baselines:
            line += f" | full train split {_pct(baselines['full']['metrics'])}"
        if r.get("recovery"):
            line += f" | recovery {100 * r['recovery']['accuracy']:.0f} %"
        lines.append(line)
    syn = score.get("syn")
    if syn:
        p = syn["privacy"]
        lines.append(f"privacy audit: {p['near_copies']} near-cop{'y' if p['near_copies'] == 1 else 'ies'} of real "
                     f"training images (SSIM >= {p['thresholds']['ssim']} or cosine >= {p['thresholds']['cosine']})")
    return lines


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    try:
        report, score = (json.loads(Path(p).read_text(encoding="utf-8")) for p in argv)
    except (OSError, ValueError) as exc:
        print(f"error: cannot read the reports: {exc}", file=sys.stderr)
        return 3
    print("\n".join(summarize(report, score)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
