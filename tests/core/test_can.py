"""Tests for nlptool.core.can (CAN, classification with alternating normalization)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nlptool.core import can
from nlptool.core.can import calibrate, calibrate_reference, topk_uncertainty
from nlptool.core.errors import InputError, NlptoolError, RowError

IMPLS = [calibrate, calibrate_reference]
IMPL_IDS = ["vectorised", "reference"]


def entropy(values):
    return -sum(v * math.log(v) for v in values if v > 0)


# ----------------------------------------------------------------------------------------------------------------------
# hand-computed cases


# Three confident rows and one uncertain row (3 classes, k = 3, threshold 0.9).
HAND = np.array(
    [
        [0.9, 0.05, 0.05],  # u = H(.9,.05,.05)/log 3 = 0.359
        [0.8, 0.1, 0.1],  # u = 0.582
        [0.1, 0.8, 0.1],  # u = 0.582
        [0.4, 0.3, 0.3],  # u = 0.991 -> uncertain
    ]
)


def test_hand_case_uncertainties():
    got = topk_uncertainty(HAND, k=3)
    want = [entropy(row) / math.log(3) for row in HAND.tolist()]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-15)
    assert (got[:3] < 0.9).all() and got[3] >= 0.9


@pytest.mark.parametrize("fn", IMPLS, ids=IMPL_IDS)
def test_hand_case_one_round_uniform_prior(fn):
    # column means of Y = [P_c; p]: (0.9+0.8+0.1+0.4)/4 = 0.55, (0.05+0.1+0.8+0.3)/4 = 0.3125,
    # (0.05+0.1+0.1+0.3)/4 = 0.1375; p / m = 8/11, 24/25, 24/11; sum 1064/275 -> 25/133, 33/133, 75/133
    out, mask, unc = fn(HAND, return_mask=True)
    np.testing.assert_allclose(out[3], [25 / 133, 33 / 133, 75 / 133], rtol=0, atol=1e-15)
    np.testing.assert_array_equal(out[:3], HAND[:3])
    np.testing.assert_array_equal(mask, [False, False, False, True])
    np.testing.assert_allclose(unc, topk_uncertainty(HAND), rtol=0, atol=0)


@pytest.mark.parametrize("fn", IMPLS, ids=IMPL_IDS)
def test_hand_case_one_round_prior(fn):
    prior = [5.0, 3.0, 2.0]  # normalised to 0.5, 0.3, 0.2
    m = [0.55, 0.3125, 0.1375]
    raw = [0.4 / m[0] * 0.5, 0.3 / m[1] * 0.3, 0.3 / m[2] * 0.2]
    want = [x / sum(raw) for x in raw]
    out = fn(HAND, prior)
    np.testing.assert_allclose(out[3], want, rtol=0, atol=1e-15)
    np.testing.assert_array_equal(out[:3], HAND[:3])


@pytest.mark.parametrize("fn", IMPLS, ids=IMPL_IDS)
def test_hand_case_alpha_two(fn):
    # Y^2 column sums over all 4 rows: 0.81+0.64+0.01+0.16, 0.0025+0.01+0.64+0.09, 0.0025+0.01+0.01+0.09
    m = [(0.81 + 0.64 + 0.01 + 0.16) / 4, (0.0025 + 0.01 + 0.64 + 0.09) / 4, (0.0025 + 0.01 + 0.01 + 0.09) / 4]
    raw = [0.16 / m[0], 0.09 / m[1], 0.09 / m[2]]
    want = [x / sum(raw) for x in raw]
    out = fn(HAND, alpha=2.0)
    np.testing.assert_allclose(out[3], want, rtol=0, atol=1e-15)


@pytest.mark.parametrize("fn", IMPLS, ids=IMPL_IDS)
def test_hand_case_two_rounds(fn):
    # 2 classes, 1 confident row [0.9, 0.1] (u = 0.469) and 1 uncertain row [0.6, 0.4] (u = 0.971).
    # round 1: means (0.75, 0.25); Y/m = [[1.2, 0.4], [0.8, 1.6]] -> rows [[3/4, 1/4], [1/3, 2/3]]
    # round 2: means (13/24, 11/24); last row (1/3)/(13/24) = 8/13, (2/3)/(11/24) = 16/11 -> [11/37, 26/37]
    probs = np.array([[0.9, 0.1], [0.6, 0.4]])
    out, mask, _ = fn(probs, k=2, iterations=2, return_mask=True)
    np.testing.assert_allclose(out[1], [11 / 37, 26 / 37], rtol=0, atol=1e-15)
    np.testing.assert_array_equal(out[0], probs[0])
    np.testing.assert_array_equal(mask, [False, True])


# ----------------------------------------------------------------------------------------------------------------------
# topk_uncertainty


def test_topk_uncertainty_direct_formula():
    rows = np.array(
        [
            [0.25, 0.25, 0.25, 0.25],  # uniform top-3 -> 1
            [0.0, 1.0, 0.0, 0.0],  # one-hot -> 0
            [0.5, 0.3, 0.2, 0.0],
            [0.6, 0.0, 0.4, 0.0],  # top-3 contains an exact zero: 0 log 0 = 0
        ]
    )
    got = topk_uncertainty(rows, k=3)
    want = [1.0, 0.0, entropy([0.5, 0.3, 0.2]) / math.log(3), entropy([0.6, 0.4]) / math.log(3)]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-15)
    got2 = topk_uncertainty(rows, k=2)
    want2 = [1.0, 0.0, entropy([5 / 8, 3 / 8]) / math.log(2), entropy([0.6, 0.4]) / math.log(2)]
    np.testing.assert_allclose(got2, want2, rtol=0, atol=1e-15)


def test_topk_uncertainty_clamps_k_and_ignores_scale():
    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.ones(4), size=10)
    np.testing.assert_array_equal(topk_uncertainty(probs, k=10), topk_uncertainty(probs, k=4))
    np.testing.assert_allclose(topk_uncertainty(3 * probs), topk_uncertainty(probs), rtol=0, atol=1e-15)
    assert topk_uncertainty(np.zeros((0, 3))).shape == (0,)


def test_topk_uncertainty_k_below_two():
    with pytest.raises(NlptoolError, match="k must be at least 2"):
        topk_uncertainty([[0.5, 0.5]], k=1)
    with pytest.raises(NlptoolError, match="k must be at least 2"):
        topk_uncertainty([[1.0], [1.0]], k=3)  # one class: k clamps to 1


# ----------------------------------------------------------------------------------------------------------------------
# vectorised == reference


def random_probs(rng, n, c, zero_frac=0.25):
    probs = rng.dirichlet(np.full(c, rng.uniform(0.2, 2.0)), size=n)
    probs[rng.random(probs.shape) < zero_frac] = 0.0
    empty = probs.sum(axis=1) == 0
    probs[empty, rng.integers(c, size=int(empty.sum()))] = 1.0
    return probs / probs.sum(axis=1, keepdims=True)


def check_against_reference(probs, prior=None, **kw):
    out, mask, unc = calibrate(probs, prior, return_mask=True, **kw)
    ref, ref_mask, ref_unc = calibrate_reference(probs, prior, return_mask=True, **kw)
    assert out.dtype == np.float64 and out.shape == probs.shape
    assert np.abs(out - ref).max(initial=0.0) <= 1e-12
    np.testing.assert_array_equal(mask, ref_mask)
    np.testing.assert_array_equal(unc, ref_unc)
    threshold = kw.get("threshold", 0.9)
    np.testing.assert_array_equal(mask, ~(topk_uncertainty(probs, k=kw.get("k", 3)) < threshold))
    np.testing.assert_array_equal(out[~mask], probs[~mask])  # confident rows unchanged, bit for bit
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    assert np.isfinite(out).all() and (out >= 0).all()
    assert (out[probs == 0] == 0).all()  # exact zeros stay zero
    return out, mask


@pytest.mark.parametrize("iterations", [1, 2, 3])
@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0])
@pytest.mark.parametrize("seed", range(4))
def test_vectorised_matches_reference(seed, alpha, iterations):
    rng = np.random.default_rng(seed)
    c = int(rng.integers(3, 8))
    probs = random_probs(rng, 40, c)
    prior = rng.dirichlet(np.ones(c))
    threshold = float(np.median(topk_uncertainty(probs)))  # a mix of confident and uncertain rows
    _, mask = check_against_reference(probs, prior, threshold=threshold, alpha=alpha, iterations=iterations)
    assert 0 < mask.sum() < len(mask)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.data(),
    n=st.integers(1, 12),
    c=st.integers(2, 6),
    alpha=st.sampled_from([0.5, 1.0, 2.0, 3.0]),
    iterations=st.integers(1, 3),
    k=st.integers(2, 6),
    threshold=st.floats(-0.1, 1.1),
)
def test_vectorised_matches_reference_hypothesis(data, n, c, alpha, iterations, k, threshold):
    cell = st.one_of(st.just(0.0), st.floats(1e-12, 1.0), st.floats(0.0, 1.0))
    raw = np.array(data.draw(st.lists(st.lists(cell, min_size=c, max_size=c), min_size=n, max_size=n)))
    raw[raw.sum(axis=1) == 0, 0] = 1.0
    probs = raw / raw.sum(axis=1, keepdims=True)
    prior = np.array(data.draw(st.lists(st.one_of(st.just(0.0), st.floats(0.01, 1.0)), min_size=c, max_size=c)))
    if prior.sum() == 0:
        prior[0] = 1.0
    kw = dict(k=k, threshold=threshold, alpha=alpha, iterations=iterations)
    dead = ~((probs > 0) & (prior > 0)).any(axis=1)
    if dead.any():  # a row with all its mass on zero-prior classes is rejected by both
        for fn in IMPLS:
            with pytest.raises(RowError) as info:
                fn(probs, prior, **kw)
            assert info.value.row == int(np.argmax(dead))
        return
    try:
        calibrate_reference(probs, prior, **kw)
    except RowError as exc:  # an adjusted row underflowed (tiny mass on the prior's classes, alpha > 1): both raise
        assert "smaller alpha" in exc.message
        with pytest.raises(RowError, match="smaller alpha") as info:
            calibrate(probs, prior, **kw)
        assert info.value.row == exc.row
        return
    out, _ = check_against_reference(probs, prior, **kw)
    assert (out[:, prior == 0][~(topk_uncertainty(probs, k=k) < threshold)] == 0).all()


@pytest.mark.parametrize("iterations", [2, 3])
def test_chunked_factored_path(monkeypatch, iterations):
    monkeypatch.setattr(can, "_BLOCK_ROWS", 4)  # uncertain rows in chunks of 4 (and a remainder) ...
    monkeypatch.setattr(can, "_BLOCK_BYTES", 8 * 4 * 3)  # ... against confident rows in blocks of 3 (and a remainder)
    rng = np.random.default_rng(7)
    probs = random_probs(rng, 30, 5)
    _, mask = check_against_reference(probs, rng.dirichlet(np.ones(5)), threshold=0.7, alpha=1.5, iterations=iterations)
    assert mask.sum() % 4 and (~mask).sum() % 3 and mask.sum() > 4 and (~mask).sum() > 3


@pytest.mark.parametrize("alpha", [0.5, 2.0])
def test_direct_fallback_path(monkeypatch, alpha):
    calls = []
    direct = can._direct_rounds

    def spy(conf, rows, *args):
        calls.append(rows.shape[0])
        return direct(conf, rows, *args)

    monkeypatch.setattr(can, "_SAFE_TINY", np.inf)  # every row counts as out of the safe range
    monkeypatch.setattr(can, "_CHUNK_BYTES", 2000)  # several small chunks in the fallback too
    monkeypatch.setattr(can, "_direct_rounds", spy)
    rng = np.random.default_rng(8)
    probs = random_probs(rng, 30, 5)
    _, mask = check_against_reference(probs, rng.dirichlet(np.ones(5)), threshold=0.7, alpha=alpha, iterations=3)
    assert calls == [int(mask.sum())]


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("decades", [30, 300])
@pytest.mark.parametrize("alpha", [0.5, 2.0, 3.0])
@pytest.mark.parametrize("seed", range(2))
def test_extreme_dynamic_range_matches_reference(monkeypatch, seed, alpha, decades):
    # entries from 1 down to 1e-300 (two comparable entries per row so some rows are uncertain), tiny prior weights:
    # rows outside the factored form's safe range must be recomputed, with no overflow warnings on the way
    calls = []
    direct = can._direct_rounds
    monkeypatch.setattr(can, "_direct_rounds", lambda conf, rows, *a: calls.append(len(rows)) or direct(conf, rows, *a))
    rng = np.random.default_rng(100 + seed)
    raw = 10.0 ** -rng.uniform(0, decades, size=(30, 6))
    for row in raw:
        row[rng.choice(6, size=2, replace=False)] = rng.uniform(0.2, 1.0, size=2)
    raw[rng.random(raw.shape) < 0.2] = 0.0
    raw[raw.sum(axis=1) == 0, 0] = 1.0
    probs = raw / raw.sum(axis=1, keepdims=True)
    prior = 10.0 ** -rng.uniform(0, decades / 3, size=6)
    threshold = float(np.median(topk_uncertainty(probs)))
    _, mask = check_against_reference(probs, prior, threshold=threshold, alpha=alpha, iterations=3)
    assert 0 < mask.sum() < len(mask)
    if decades == 300 and alpha > 1:
        assert sum(calls) > 0  # the range guard did trigger here


@pytest.mark.parametrize("iterations", [1, 2, 3])
def test_all_zero_column_stays_zero(iterations):
    probs = np.array([[0.9, 0.1, 0.0], [0.05, 0.95, 0.0], [0.5, 0.5, 0.0], [0.45, 0.55, 0.0]])
    out, _ = check_against_reference(probs, threshold=0.8, k=2, iterations=iterations)
    assert (out[:, 2] == 0).all()


# ----------------------------------------------------------------------------------------------------------------------
# threshold semantics, degenerate cases


@pytest.mark.parametrize("fn", IMPLS, ids=IMPL_IDS)
def test_threshold_zero_adjusts_every_row_against_itself(fn):
    # no confident rows: Y = [p_j], so p_j^a / mean = 1 on the support and the row becomes the prior on its support
    probs = np.array([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5], [1.0, 0.0, 0.0]])
    prior = [0.2, 0.3, 0.5]
    for iterations in (1, 2):
        out, mask, _ = fn(probs, prior, threshold=0.0, iterations=iterations, alpha=2.0, return_mask=True)
        assert mask.all()
        np.testing.assert_allclose(out, [[0.4, 0.6, 0.0], [0.2, 0.3, 0.5], [1.0, 0.0, 0.0]], rtol=0, atol=1e-15)


@pytest.mark.parametrize("threshold", [1.0000001, 2.0, np.inf])
@pytest.mark.parametrize("fn", IMPLS, ids=IMPL_IDS)
def test_threshold_above_one_adjusts_nothing(fn, threshold):
    probs = random_probs(np.random.default_rng(3), 20, 4)
    probs[0] = 0.25  # u = 1 exactly in exact arithmetic: still confident when threshold > 1
    out, mask, _ = fn(probs, [0.7, 0.1, 0.1, 0.1], threshold=threshold, return_mask=True)
    assert not mask.any()
    np.testing.assert_array_equal(out, probs)


def test_output_is_new_array_and_input_untouched():
    probs = HAND.copy()
    out = calibrate(probs)
    np.testing.assert_array_equal(probs, HAND)
    assert out is not probs and out.dtype == np.float64
    out_int = calibrate([[1, 0], [0, 1]], k=2)  # integer input is accepted
    np.testing.assert_array_equal(out_int, [[1.0, 0.0], [0.0, 1.0]])


def test_prior_is_normalised():
    np.testing.assert_allclose(calibrate(HAND, [2, 1, 1]), calibrate(HAND, [0.5, 0.25, 0.25]), rtol=0, atol=1e-15)
    np.testing.assert_array_equal(calibrate(HAND, [1, 1, 1]), calibrate(HAND, None))


@pytest.mark.parametrize("fn", IMPLS, ids=IMPL_IDS)
def test_empty_input(fn):
    out, mask, unc = fn(np.zeros((0, 4)), return_mask=True)
    assert out.shape == (0, 4) and mask.shape == (0,) and unc.shape == (0,)


# ----------------------------------------------------------------------------------------------------------------------
# errors


def bad_probs(value, row):
    probs = HAND.copy()
    probs[row, 1] = value
    return probs


@pytest.mark.parametrize("fn", [*IMPLS, topk_uncertainty], ids=[*IMPL_IDS, "topk_uncertainty"])
@pytest.mark.parametrize(
    ("value", "row", "match"),
    [(np.nan, 2, "finite"), (np.inf, 0, "finite"), (-0.1, 1, "negative"), (-np.inf, 3, "finite")],
)
def test_bad_entries_raise_row_error(fn, value, row, match):
    with pytest.raises(RowError, match=match) as info:
        fn(bad_probs(value, row))
    assert info.value.row == row
    assert isinstance(info.value, NlptoolError)


@pytest.mark.parametrize("fn", [*IMPLS, topk_uncertainty], ids=[*IMPL_IDS, "topk_uncertainty"])
def test_first_bad_row_is_reported(fn):
    probs = HAND.copy()
    probs[3, 0] = np.nan
    probs[1, 0] = -1.0
    probs[2] = 0.0
    with pytest.raises(RowError) as info:
        fn(probs)
    assert info.value.row == 1


@pytest.mark.parametrize("fn", [*IMPLS, topk_uncertainty], ids=[*IMPL_IDS, "topk_uncertainty"])
def test_all_zero_row(fn):
    probs = HAND.copy()
    probs[2] = 0.0
    with pytest.raises(RowError, match="all probabilities are 0") as info:
        fn(probs)
    assert info.value.row == 2
    if fn is not topk_uncertainty:
        with pytest.raises(RowError):
            fn(probs, renormalize=True)


@pytest.mark.parametrize("fn", IMPLS, ids=IMPL_IDS)
def test_rows_must_sum_to_one(fn):
    probs = HAND.copy()
    probs[1] *= 0.9
    with pytest.raises(RowError, match="sum to") as info:
        fn(probs)
    assert info.value.row == 1
    np.testing.assert_allclose(fn(probs, renormalize=True), fn(HAND), rtol=0, atol=1e-15)
    near = HAND.copy()
    near[0, 0] += 5e-7  # within the 1e-6 tolerance: accepted as is
    np.testing.assert_array_equal(fn(near)[0], near[0])


@pytest.mark.parametrize("fn", IMPLS, ids=IMPL_IDS)
@pytest.mark.parametrize(
    ("prior", "match"),
    [
        ([0.5, 0.5], "2 entries but the probabilities have 3 classes"),
        ([0.5, 0.5, 0.0, 0.0], "4 entries"),
        ([0.5, -0.1, 0.6], "negative"),
        ([0.5, np.nan, 0.5], "NaN"),
        ([0.0, 0.0, 0.0], "all zeros"),
        ([[0.3, 0.3, 0.4]], "1-D"),
        (["a", "b", "c"], "numbers"),
    ],
)
def test_bad_prior(fn, prior, match):
    with pytest.raises(NlptoolError, match=match) as info:
        fn(HAND, prior)
    assert not isinstance(info.value, RowError)


@pytest.mark.parametrize("fn", IMPLS, ids=IMPL_IDS)
def test_row_contradicting_prior(fn):
    probs = np.array([[0.9, 0.1, 0.0], [0.0, 0.0, 1.0], [0.4, 0.3, 0.3]])
    with pytest.raises(RowError, match="prior is 0") as info:
        fn(probs, [0.5, 0.5, 0.0])
    assert info.value.row == 1


@pytest.mark.parametrize("fn", IMPLS, ids=IMPL_IDS)
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(k=1), "k must be at least 2"),
        (dict(k=2.5), "k must be an integer"),
        (dict(alpha=0.0), "alpha"),
        (dict(alpha=-1.0), "alpha"),
        (dict(alpha=np.nan), "alpha"),
        (dict(iterations=0), "iterations"),
        (dict(iterations=1.5), "iterations"),
        (dict(threshold=np.nan), "threshold"),
    ],
)
def test_bad_parameters(fn, kwargs, match):
    with pytest.raises(NlptoolError, match=match):
        fn(HAND, **kwargs)


@pytest.mark.parametrize("fn", [*IMPLS, topk_uncertainty], ids=[*IMPL_IDS, "topk_uncertainty"])
@pytest.mark.parametrize("probs", [[0.5, 0.5], [[[0.5, 0.5]]], [["a", "b"]]])
def test_bad_shape_or_type(fn, probs):
    with pytest.raises(NlptoolError) as info:
        fn(probs)
    assert not isinstance(info.value, RowError)


@pytest.mark.parametrize("fn", IMPLS, ids=IMPL_IDS)
def test_alpha_too_large_underflow(fn):
    # 0.4^1000 underflows: the uncertain row 3 would become all zeros
    with pytest.raises(RowError, match="smaller alpha") as info:
        fn(HAND, alpha=1000.0)
    assert info.value.row == 3


def test_single_class_is_k_error():
    with pytest.raises(NlptoolError, match="k must be at least 2"):
        calibrate([[1.0], [1.0]])


# ----------------------------------------------------------------------------------------------- priors from files


def test_parse_prior_forms(tmp_path) -> None:
    from nlptool.core.can import parse_prior

    assert parse_prior("1,3", None, 2) == pytest.approx([0.25, 0.75])
    lines = tmp_path / "c.csv"
    lines.write_text("label,count\nb,3\na,1\n", encoding="utf-8")
    assert parse_prior(str(lines), ["a", "b"], 2) == pytest.approx([0.25, 0.75])
    by_index = tmp_path / "c.json"
    by_index.write_text('{"1": 3, "0": 1}', encoding="utf-8")
    assert parse_prior(str(by_index), None, 2) == pytest.approx([0.25, 0.75])
    per_line = tmp_path / "c.txt"
    per_line.write_text("1\n3\n", encoding="utf-8")
    assert parse_prior(str(per_line), None, 2) == pytest.approx([0.25, 0.75])


def test_parse_prior_missing_class_is_an_error(tmp_path) -> None:
    from nlptool.core.can import parse_prior

    counts = tmp_path / "c.yaml"
    counts.write_text("a: 1\nc: 2\n", encoding="utf-8")
    with pytest.raises(NlptoolError, match=r"gives no count for 1 class\(es\): 'b'"):
        parse_prior(str(counts), ["a", "b", "c"], 3)
    counts.write_text("a: 1\nb: 0\nc: 2\n", encoding="utf-8")
    assert parse_prior(str(counts), ["a", "b", "c"], 3) == pytest.approx([1 / 3, 0.0, 2 / 3])
    bad = tmp_path / "c.csv"
    bad.write_text("a,1\nq,2\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"c\.csv:2: label 'q' is not a class"):
        parse_prior(str(bad), ["a", "b"], 2)


def test_error_messages_show_plain_numbers() -> None:
    with pytest.raises(NlptoolError, match=r"alpha must be a finite number > 0, got 0\.0$"):
        calibrate(np.array([[0.5, 0.5]]), alpha=np.float64(0.0))
    with pytest.raises(RowError, match=r"negative \(-0\.5\)"):
        calibrate(np.array([[1.5, -0.5]]))
