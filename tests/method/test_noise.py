import numpy as np
import pytest

from vov.method import noise


def test_pinned_values():
    # The format fixes these numbers: a change here breaks every existing file.
    first = noise.normals(4, seed=1, purpose=noise.INITIAL)
    np.testing.assert_array_equal(first, np.array(PINNED, dtype=np.float32))


PINNED = [0.8974446654319763, -1.2565397024154663, 1.890500545501709, 0.3742714822292328]


def test_statistics():
    x = noise.normals(200_000, seed=3, purpose=noise.INITIAL)
    assert x.dtype == np.float32
    assert abs(x.mean()) < 0.01 and abs(x.std() - 1) < 0.01


def test_keys_give_independent_streams():
    a = noise.normals(1000, 5, noise.INITIAL)
    b = noise.normals(1000, 5, noise.CANDIDATE, step=0, candidate=0)
    c = noise.normals(1000, 5, noise.CANDIDATE, step=0, candidate=1)
    d = noise.normals(1000, 6, noise.INITIAL)
    for other in (b, c, d):
        assert abs(np.corrcoef(a, other)[0, 1]) < 0.1


def test_prefix_stable_and_odd_counts():
    long = noise.normals(11, 9, noise.INITIAL)
    np.testing.assert_array_equal(noise.normals(5, 9, noise.INITIAL), long[:5])


def test_key_range():
    with pytest.raises(ValueError):
        noise.key(0, noise.CANDIDATE, step=1 << 32)
