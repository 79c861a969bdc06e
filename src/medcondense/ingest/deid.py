"""De-identification: keyed hashes for patients, series and (optionally) paths.

Keys are HMAC-SHA256 with a site secret that never leaves the site: ``$MEDCONDENSE_SALT`` or
the salt file ``$XDG_CONFIG_HOME/medcondense/salt`` (``~/.config/medcondense/salt``), created
with a random secret and 0600 permissions on first use. The secret is never stored in outputs.
No DICOM tag value is copied into an output: only pixel data and numeric geometry.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import secrets
from pathlib import Path

log = logging.getLogger(__name__)

SALT_ENV = "MEDCONDENSE_SALT"
KEY_CHARS = 24
# Modality is a coded string from a small vocabulary; anything else is not copied.
_MODALITY = re.compile(r"^[A-Z]{2,4}$")


def salt_path() -> Path:
    """Where the site secret lives when ``$MEDCONDENSE_SALT`` is not set."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "medcondense" / "salt"


def site_secret() -> bytes:
    """The site secret: ``$MEDCONDENSE_SALT``, else the salt file (created on first use, mode 0600)."""
    env = os.environ.get(SALT_ENV)
    if env:
        return env.encode("utf-8")
    path = salt_path()
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32))
            log.info("created a new site secret in %s (keep it: patient keys depend on it)", path)
    return path.read_text(encoding="utf-8").strip().encode("utf-8")


def keyed_hash(value: str, kind: str, secret: bytes) -> str:
    """HMAC-SHA256 of ``kind:value`` under ``secret``, shortened to :data:`KEY_CHARS` hex digits."""
    mac = hmac.new(secret, f"{kind}:{value}".encode("utf-8"), hashlib.sha256)
    return mac.hexdigest()[:KEY_CHARS]


def safe_modality(value: object) -> str:
    """The Modality code if it looks like a DICOM defined term (``CT``, ``MR``), else ``OT``."""
    text = str(value or "").strip().upper()
    return text if _MODALITY.match(text) else "OT"


def relative_source(path: str | Path, root: str | Path) -> str:
    """``path`` relative to its input root (POSIX separators); the file name when root is the file."""
    path, root = Path(path), Path(root)
    if root.is_file() or path == root:
        return path.name
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.name
