"""A gathered set of two of scikit-image's bundled photos, in the layout `vov data gather` writes."""

import pytest
from PIL import Image

from vov.train import data, manifest


@pytest.fixture(scope="session")
def photo_set(tmp_path_factory):
    pytest.importorskip("skimage")
    folder = tmp_path_factory.mktemp("photos")
    (folder / "scikit-image").mkdir()
    entries = []
    for name in ("astronaut", "coffee"):
        pixels = data.load_rgb(data.Photo(name, "scikit-image", None))
        relative = f"scikit-image/{name}.jpg"
        Image.fromarray(pixels).save(folder / relative, quality=95)
        entries.append(manifest.Entry(file=relative, sha256=manifest.sha256_file(folder / relative),
                                      source="scikit-image", origin=name, licence="public-domain",
                                      width=pixels.shape[1], height=pixels.shape[0]))
    manifest.write(folder, entries)
    return folder
