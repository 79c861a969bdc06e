"""``export --format protocol``: the set's ingest protocol as ``protocol/protocol.yaml``.

Other sites pass the file to ``medcondense ingest --protocol`` so their files have this set's
size, spacing, window rule, normalization constants, channels, slices and class names, and merge
with it. It holds settings, class names and intensity constants only: nothing about a patient.
A set whose window cannot be pinned (``auto`` resolved to several windows, or each file's VOI)
is refused with the reason (see :mod:`medcondense.ingest.protocol`).
"""

from __future__ import annotations

from pathlib import Path

from medcondense.errors import ConfigError
from medcondense.export.context import ExportContext, FormatResult

FOLDER = "protocol"
FILE = "protocol.yaml"


def export(ctx: ExportContext, root: Path) -> FormatResult:
    """Write ``root/protocol/protocol.yaml``."""
    from medcondense.ingest import protocol as proto

    attrs = dict(ctx.image_set.attrs)
    attrs.update(class_names=list(ctx.image_set.class_names), kind=ctx.image_set.kind,
                 content_hash=ctx.digest, image_shape=list(ctx.image_set.image_shape))
    try:
        protocol = proto.from_attrs(attrs)
    except ConfigError as exc:
        raise ConfigError(f"cannot export a protocol: {exc.message}", path=ctx.input_name) from None
    out = root / FOLDER
    out.mkdir(parents=True, exist_ok=True)
    (out / FILE).write_text(proto.to_yaml(protocol), encoding="utf-8")
    notes = [f"window {protocol.settings['window']}, size {protocol.settings['size']}, "
             f"{len(protocol.class_names)} classes"]
    if protocol.normalization:
        notes.append(f"pins the source's {protocol.normalization['method']} constants")
    return FormatResult(folder=FOLDER, files=1, notes=notes)
