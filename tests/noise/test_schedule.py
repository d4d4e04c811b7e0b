"""Per-layer noise schedules (noisynn.noise.schedule): the multipliers against their formulas, equal-energy
normalization as a property, tables read from text, and bad settings refused in one line."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings, strategies as st

from noisynn.errors import NoisyNNError
from noisynn.noise.schedule import LayerSchedule, make_schedule, parse_table, read_table


@pytest.mark.parametrize("n", [1, 2, 5, 30])
def test_raw_multipliers_follow_their_formulas(n):
    lin, exp, cos = (make_schedule(k, 0.25, 1.75, normalize="none") for k in ("linear", "exp", "cosine"))
    for b in range(n):
        x = b / (n - 1) if n > 1 else 0.0
        assert lin.multiplier(b, n) == pytest.approx(0.25 + 1.5 * x)
        assert exp.multiplier(b, n) == pytest.approx(0.25 * 7 ** x)
        assert cos.multiplier(b, n) == pytest.approx(1.75 + (0.25 - 1.75) * (1 + math.cos(math.pi * x)) / 2)
        assert make_schedule().multiplier(b, n) == 1.0
    # the ends are the given start and end; cosine is flat there
    if n > 1:
        for s in (lin, exp, cos):
            assert s.multiplier(0, n) == pytest.approx(0.25) and s.multiplier(n - 1, n) == pytest.approx(1.75)
    assert make_schedule("linear", 0.25, 1.75, normalize="none").multipliers(n) == \
        tuple(lin.multiplier(b, n) for b in range(n))


def test_table_is_read_by_block_and_its_length_is_checked():
    s = make_schedule("table", values=parse_table("0.5\n1, 2 # a comment\n\n3\n"), source="t.txt", normalize="none")
    assert s.values == (0.5, 1.0, 2.0, 3.0) and s.multipliers(4) == (0.5, 1.0, 2.0, 3.0)
    with pytest.raises(NoisyNNError, match="has 4 values but the model has 30 blocks"):
        s.multipliers(30)


def test_energy_normalization_of_equal_blocks():
    m = make_schedule("linear", 0.25, 1.75).multipliers(4)
    raw = [0.25, 0.75, 1.25, 1.75]
    c = math.sqrt(4 / sum(r * r for r in raw))
    assert m == pytest.approx([c * r for r in raw])
    assert sum(v * v for v in m) == pytest.approx(4)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 10, allow_nan=False), st.integers(1, 10 ** 7)), min_size=1, max_size=40)
       .filter(lambda rows: any(v > 1e-3 for v, _ in rows)),
       st.randoms(use_true_random=False))
def test_energy_normalization_holds_for_any_table_and_parameter_counts(rows, rnd):
    """sum_b N_b m_b^2 = sum_b N_b over the targeted blocks (some blocks hold no targets), and the shape is kept."""
    values = [v for v, _ in rows]
    counts = {b: n for b, (_, n) in enumerate(rows) if rnd.random() < 0.8}
    if not any(values[b] > 1e-3 for b in counts):
        counts = {b: n for b, (_, n) in enumerate(rows)}
    m = make_schedule("table", values=values).multipliers(len(values), counts)
    assert sum(n * m[b] ** 2 for b, n in counts.items()) == pytest.approx(sum(counts.values()), rel=1e-9)
    c = next(m[b] / v for b, v in enumerate(values) if v > 1e-3)
    assert m == pytest.approx([c * v for v in values], rel=1e-9, abs=1e-12)


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(["linear", "exp", "cosine"]), st.floats(0.01, 5), st.floats(0.01, 5), st.integers(1, 64))
def test_normalized_schedules_have_the_constant_energy(kind, start, end, n):
    m = make_schedule(kind, start, end).multipliers(n)
    assert sum(v * v for v in m) == pytest.approx(n, rel=1e-9)
    assert make_schedule(kind, start, end, normalize="none").multipliers(n) == \
        pytest.approx([make_schedule(kind, start, end).multiplier(b, n) for b in range(n)])


def test_labels_and_records():
    assert make_schedule().label() == "constant" and make_schedule().is_constant
    lin = make_schedule("linear", 0.25, 1.75)
    assert lin.label() == "linear:0.25->1.75,energy"
    assert lin.record() == {"kind": "linear", "label": "linear:0.25->1.75,energy", "start": 0.25, "end": 1.75,
                            "normalize": "energy"}
    tab = make_schedule("table", values=[1, 2], source="dir/tab.txt", normalize="none")
    assert tab.label() == "table:tab.txt,none" and tab.record()["values"] == [1.0, 2.0]
    assert isinstance(tab, LayerSchedule)


@pytest.mark.parametrize("kwargs,message", [
    ({"kind": "zigzag"}, "unknown --layer_schedule 'zigzag'"),
    ({"kind": "linear", "start": 1.0}, "needs --schedule_start and --schedule_end"),
    ({"kind": "exp", "start": 0.0, "end": 1.0}, "--schedule_start must be a finite number > 0"),
    ({"kind": "linear", "start": -1.0, "end": 1.0}, "--schedule_start must be a finite number >= 0"),
    ({"kind": "linear", "start": 1.0, "end": math.inf}, "--schedule_end must be a finite number"),
    ({"kind": "table"}, "--layer_schedule table needs --schedule_file"),
    ({"kind": "table", "values": [1.0, -2.0]}, "finite numbers >= 0"),
    ({"kind": "constant", "start": 1.0}, "apply to linear, exp and cosine"),
    ({"kind": "linear", "start": 1.0, "end": 2.0, "values": [1.0]}, "use it with --layer_schedule table"),
    ({"kind": "linear", "start": 1.0, "end": 2.0, "normalize": "rms"}, "unknown --schedule_normalize 'rms'"),
])
def test_bad_settings_are_one_line(kwargs, message):
    with pytest.raises(NoisyNNError, match=message) as err:
        make_schedule(**kwargs)
    assert "\n" not in str(err.value)


def test_zero_everywhere_cannot_be_normalized_and_bad_files_are_one_line(tmp_path):
    with pytest.raises(NoisyNNError, match="is 0 on every targeted block"):
        make_schedule("table", values=[0, 0, 1]).multipliers(3, {0: 5, 1: 5})
    assert make_schedule("table", values=[0, 0, 1]).multipliers(3, {2: 5}) == (0.0, 0.0, 1.0)
    with pytest.raises(NoisyNNError, match="line 2: 'x' is not a number"):
        parse_table("1\nx\n")
    with pytest.raises(NoisyNNError, match="holds no numbers"):
        parse_table("# nothing\n")
    with pytest.raises(NoisyNNError, match="cannot read the layer schedule file"):
        read_table(str(tmp_path / "missing.txt"))
    with pytest.raises(NoisyNNError, match="outside the model's 3 blocks"):
        make_schedule("linear", 1, 2).multiplier(3, 3)
