"""The training set's manifest refuses what training must never see."""

import json

import numpy as np
import pytest

from vov.errors import UsageError
from vov.train import data, manifest


def test_a_gathered_set_verifies(photo_set):
    entries = manifest.verify(photo_set)
    assert [e.licence for e in entries] == ["public-domain", "public-domain"]


def _edit(folder, tmp_path, change):
    body = json.loads((folder / manifest.MANIFEST).read_text())
    change(body["photos"][0])
    copy = tmp_path / "set"
    copy.mkdir()
    for row in body["photos"]:
        if ".." not in row["file"]:
            (copy / row["file"]).parent.mkdir(parents=True, exist_ok=True)
            (copy / row["file"]).write_bytes((folder / row["file"]).read_bytes())
    (copy / manifest.MANIFEST).write_text(json.dumps(body))
    return copy


@pytest.mark.parametrize("change, message", [
    (lambda row: row.update(licence="all-rights-reserved"), "licence"),
    (lambda row: row.update(licence="CC-BY-NC-4.0"), "licence"),
    (lambda row: row.update(source="Kodak PhotoCD", origin="kodim03.png"), "evaluation set"),
    (lambda row: row.update(origin="clic2020/valid/x.png"), "evaluation set"),
    (lambda row: row.update(origin="/usr/share/backgrounds/mate/nature/LadyBird.jpg"), "held-out"),
    (lambda row: row.update(sha256="0" * 64), "SHA-256"),
    (lambda row: row.update(file="../escape.jpg"), "inside"),
])
def test_refused(photo_set, tmp_path, change, message):
    folder = _edit(photo_set, tmp_path, change)
    with pytest.raises(UsageError, match=message):
        manifest.verify(folder)


def test_missing_or_foreign_manifest(tmp_path):
    with pytest.raises(UsageError, match="no manifest"):
        manifest.read(tmp_path)
    (tmp_path / manifest.MANIFEST).write_text('{"version": 99}')
    with pytest.raises(UsageError, match="not a vov photo manifest"):
        manifest.read(tmp_path)


def test_thumbnails_find_a_rescaled_held_out_photo_and_nothing_else():
    from PIL import Image

    names, held = manifest.held_out_thumbnails()
    if not names:
        pytest.skip("the held-out photos' Debian packages are not installed")
    photo = data.load_rgb(data.held_out_photos()[0])
    small = np.asarray(Image.fromarray(photo).resize((photo.shape[1] // 3, photo.shape[0] // 3)))
    assert manifest.near_duplicates(manifest.thumbnail(small)[None], held)[0] == 0
    others = [manifest.thumbnail(data.load_rgb(p)) for p in data.training_photos()[:20]]
    assert (manifest.near_duplicates(np.stack(others), held) == -1).all()
