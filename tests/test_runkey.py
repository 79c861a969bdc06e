"""Tests for medcondense.runkey: one run key and one "skip if done" rule for every stage."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from medcondense import store
from medcondense.errors import AlreadyDone, ConfigError
from medcondense.runkey import content_digest, file_digest, hdf5_record, json_record, run_key, skip_if_done


def test_run_key_is_sha256_of_canonical_json():
    parts = {"source": "abc", "hp": {"lr": 0.1, "aug": ["crop", "color"]}}
    expected = hashlib.sha256(json.dumps(parts, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    assert run_key(parts) == expected and len(expected) == 64
    assert run_key({"hp": {"aug": ["crop", "color"], "lr": 0.1}, "source": "abc"}) == expected  # key order
    assert run_key({**parts, "source": "abd"}) != expected
    assert run_key({"n": np.int64(3), "x": np.float32(0.5)}) == run_key({"n": 3, "x": 0.5})


def test_file_digest_streams_to_the_in_memory_digest_and_sees_one_byte(tmp_path: Path):
    """Ingest fingerprints files read once in memory (content_digest) and, for the no-op check
    before reading, streamed in blocks (file_digest): both must give the same text, or an
    unchanged input would look changed."""
    data = bytes(range(256)) * 5000  # 1.28 MB: several blocks of 1 MB and of the 4 KB used here
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    digest = content_digest(data)
    assert digest.startswith("blake3:") and len(digest) == len("blake3:") + 64
    assert file_digest(path) == file_digest(path, block=4096) == digest == content_digest(memoryview(data))
    changed = bytearray(data)
    changed[-1] ^= 1
    path.write_bytes(bytes(changed))
    assert file_digest(path) != digest


def test_run_key_refuses_what_json_cannot_say():
    with pytest.raises(TypeError, match="object"):
        run_key({"thing": object()})


def _report(path: Path, key: str | None, **extra) -> Path:
    path.write_text(json.dumps({"run_key": key, **extra}), encoding="utf-8")
    return path


def test_missing_output_goes_on(tmp_path):
    skip_if_done(tmp_path / "report.json", "k1", False, json_record)


def test_same_key_is_already_done_with_the_recorded_summary(tmp_path):
    out = _report(tmp_path / "report.json", "k1", results=[1, 2])
    with pytest.raises(AlreadyDone) as done:
        skip_if_done(out, "k1", False, json_record)
    assert done.value.path == str(out) and done.value.result["results"] == [1, 2]


def test_other_key_is_refused_and_overwrite_passes(tmp_path):
    out = _report(tmp_path / "report.json", "k1")
    with pytest.raises(ConfigError, match="from a different run; pass --overwrite to replace it") as info:
        skip_if_done(out, "k2", False, json_record)
    assert info.value.exit_code == 2 and info.value.path == str(out)
    skip_if_done(out, "k2", True, json_record)
    skip_if_done(out, "k1", True, json_record)  # overwrite redoes even a finished run


@pytest.mark.parametrize("content", [b"not json {", b"\xff\xfe\x00", b"[1, 2]", b'{"results": []}', b'{"run_key": null}'])
def test_unreadable_or_keyless_report_counts_as_a_different_run(tmp_path, content):
    out = tmp_path / "report.json"
    out.write_bytes(content)
    with pytest.raises(ConfigError, match="different run"):
        skip_if_done(out, "k1", False, json_record)


def test_a_folder_in_the_way_counts_as_a_different_run(tmp_path):
    with pytest.raises(ConfigError, match="different run"):
        skip_if_done(tmp_path, "k1", False, json_record)


def test_hdf5_record_reads_the_run_key_attribute(tmp_path, blob_set):
    out = tmp_path / "syn.h5"
    blob_set.attrs["run_key"] = "k1"
    store.write(out, blob_set)
    reader = hdf5_record(lambda path, attrs: {"output": str(path), "images": attrs["n"]})
    with pytest.raises(AlreadyDone) as done:
        skip_if_done(out, "k1", False, reader)
    assert done.value.result == {"output": str(out), "images": blob_set.n}
    with pytest.raises(ConfigError, match="different run"):
        skip_if_done(out, "k2", False, reader)


def test_hdf5_without_key_or_not_ours_counts_as_a_different_run(tmp_path, real_h5):
    with pytest.raises(ConfigError, match="different run"):
        skip_if_done(real_h5, "k1", False, hdf5_record())  # blob_set records no run_key
    bogus = tmp_path / "notes.h5"
    bogus.write_text("not hdf5")
    with pytest.raises(ConfigError, match="different run"):
        skip_if_done(bogus, "k1", False, hdf5_record())
