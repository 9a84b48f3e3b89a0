"""Photo packs: within their budget, read back exactly, and refused when foreign or changed."""

import pytest

from vov.errors import UsageError
from vov.train.pack import PhotoPack, build_pack


def test_pack_round_trip(photo_set, tmp_path):
    out = tmp_path / "photos.pack"
    summary = build_pack(photo_set, out, long_side=128, progress=False)
    assert summary["photos"] == 2 and summary["licences"] == {"public-domain": 2}
    pack = PhotoPack(out)
    pack.verify()
    assert len(pack) == 2 and max(pack.pixels(0).shape[:2]) == 128
    assert pack.entries[1].origin == "coffee"


def test_pack_over_budget_is_refused(photo_set, tmp_path):
    with pytest.raises(UsageError, match="passes 0.01 MB"):
        build_pack(photo_set, tmp_path / "p.pack", long_side=512, max_mb=0.01, progress=False)


def test_foreign_and_changed_packs(photo_set, tmp_path):
    (tmp_path / "junk.pack").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}" + b"x" * 10)
    with pytest.raises(UsageError, match="not a vov photo pack"):
        PhotoPack(tmp_path / "junk.pack")
    out = tmp_path / "photos.pack"
    build_pack(photo_set, out, long_side=96, progress=False)
    blob = bytearray(out.read_bytes())
    blob[-10] ^= 0xFF  # a byte of the last photo
    out.write_bytes(bytes(blob))
    with pytest.raises(UsageError, match="digest"):
        PhotoPack(out).verify()
