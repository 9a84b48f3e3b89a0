import numpy as np
import pytest
import torch

from vov.format import entropy
from vov.errors import BitstreamError


def laplace_ints(n, scale, seed=0):
    return np.round(np.random.default_rng(seed).laplace(0, scale, n)).astype(np.int64)


def test_round_trip_and_overhead():
    q = laplace_ints(20000, 3.0)
    prior = entropy.PriorParams((200, 55), (8, 24))
    qmax = int(np.abs(q).max())
    payload = entropy.encode(q, prior, qmax)
    np.testing.assert_array_equal(entropy.decode(payload, prior, qmax, len(q)), q)
    ideal = prior.ideal_bits(q, qmax)
    assert 8 * len(payload) <= ideal * 1.01 + 64


def test_table_is_positive_integer_and_symmetric():
    table = entropy.PriorParams((10, 100, 145), (-8, 0, 30)).table(40)
    assert len(table) == 81 and np.all(table >= 1) and np.all(table == np.round(table))
    np.testing.assert_array_equal(table, table[::-1])


def test_fitted_prior_matches_data():
    q = laplace_ints(5000, 5.0, seed=1)
    model = entropy.LogisticMixture(3)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    x = torch.from_numpy(q).float()
    for _ in range(300):
        opt.zero_grad()
        loss = model.bits(x) / len(q)
        loss.backward()
        opt.step()
    params = model.quantised()
    qmax = int(np.abs(q).max())
    # a discretised Laplace with b = 5 has about log2(2 e b) = 4.76 bits of entropy
    bits_per_symbol = params.ideal_bits(q, qmax) / len(q)
    assert 4.70 < bits_per_symbol < 4.90
    bits = float(model.bits(x).detach())
    assert abs(params.ideal_bits(q, qmax) - bits) / bits < 0.02


@pytest.mark.parametrize("weights,codes", [((), ()), ((0,), (0,)), ((1, 2), (3,)), ((300,), (0,)), ((1,) * 9, (0,) * 9)])
def test_bad_prior_params_refused(weights, codes):
    with pytest.raises(BitstreamError):
        entropy.PriorParams(weights, codes)


def test_decode_refuses_partial_word():
    with pytest.raises(BitstreamError):
        entropy.decode(b"\x01\x02\x03", entropy.PriorParams((1,), (0,)), 3, 10)


def test_all_zero_vector_codes_as_an_empty_payload():
    prior = entropy.PriorParams((255,), (0,))
    q = np.zeros(1000, dtype=np.int64)
    assert entropy.encode(q, prior, 0) == b""
    np.testing.assert_array_equal(entropy.decode(b"", prior, 0, 1000), q)
    with pytest.raises(BitstreamError, match="qmax = 0"):
        entropy.decode(b"\0\0\0\0", prior, 0, 1000)


@pytest.mark.parametrize("change", ["one word", "short", "long"])
def test_payload_must_hold_exactly_the_coded_integers(change):
    q = laplace_ints(4000, 3.0, seed=2)
    prior = entropy.PriorParams((200, 55), (8, 24))
    qmax = int(np.abs(q).max())
    payload = entropy.encode(q, prior, qmax)
    bad, count = {"one word": (payload[:4], len(q)), "short": (payload[:-4], len(q)),
                  "long": (payload + payload[:4], len(q))}[change]
    with pytest.raises(BitstreamError, match="exactly"):
        entropy.decode(bad, prior, qmax, count)


def test_an_empty_payload_decodes_only_to_the_vector_that_codes_as_nothing():
    """ANS codes a run of the table's first symbol as no words at all: the one canonical empty payload."""
    prior = entropy.PriorParams((200, 55), (8, 24))
    q = entropy.decode(b"", prior, 28, 1 << 20)
    assert np.all(q == -28) and entropy.encode(q, prior, 28) == b""
