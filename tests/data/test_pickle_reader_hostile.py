"""Small hostile pickles cost little: shared references stay shared, the work is linear, errors are short.

Each crafted stream is a few hundred bytes that a naive reader expands to 4³⁰ (10¹⁸) objects, hashes
or prints in full. The time bound is generous (2 s for what takes milliseconds): it tells a linear
algorithm from an exponential one, which would not end at all; it is not a benchmark.
"""

from __future__ import annotations

import pickle
import struct
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from ddpm.data.pickle_reader import read_pickle_data

DEPTH = 30
WIDTH = 4  # references to the level below held by each level: WIDTH**DEPTH leaves if copied
FAST_S = 2.0

PROTO2 = b"\x80\x02"
STOP = b"."


def _get(index: int) -> bytes:
    return b"h" + bytes([index])  # BINGET


def _put(index: int) -> bytes:
    return b"q" + bytes([index])  # BINPUT


def _laughs(close: bytes, depth: int = DEPTH, width: int = WIDTH) -> bytes:
    """Memo 0 is empty; memo i is a list (``close`` = LIST) or tuple (TUPLE) of ``width`` × memo i-1."""
    out = (b"]" if close == b"l" else b")") + _put(0)  # tuples all the way: hashable, as a key would be
    for level in range(1, depth + 1):
        out += b"(" + _get(level - 1) * width + close + _put(level)
    return out  # leaves the top level on the stack


def _read_quickly(raw: bytes) -> Any:
    start = time.perf_counter()
    try:
        return read_pickle_data(raw, "laughs")
    finally:
        assert time.perf_counter() - start < FAST_S


def _levels(value: Any, child: Callable[[Any], Any]) -> list[Any]:
    chain = [value]
    while len(chain) <= DEPTH:
        chain.append(child(chain[-1]))
    return chain


@pytest.mark.parametrize("close", [b"l", b"t"], ids=["lists", "tuples"])
def test_billion_laughs_of_shared_containers_give_the_shared_result_at_once(close: bytes) -> None:
    raw = PROTO2 + _laughs(close) + STOP
    assert len(raw) < 400
    result = _read_quickly(raw)
    chain = _levels(result, lambda level: level[0])
    assert chain[-1] in ([], ()) and all(len(level) == WIDTH for level in chain[:-1])
    assert all(all(item is level[0] for item in level) for level in chain[:-1])  # shared, not copied
    assert isinstance(result, list if close == b"l" else tuple)


def test_billion_laughs_of_dict_values_give_the_shared_result_at_once() -> None:
    out = b"]" + _put(0)
    for level in range(1, DEPTH + 1):
        out += b"(" + b"U\x01a" + _get(level - 1) + b"U\x01b" + _get(level - 1) + b"d" + _put(level)
    raw = PROTO2 + out + STOP
    assert len(raw) < 450
    result = _read_quickly(raw)
    chain = _levels(result, lambda level: level[b"a"])
    assert chain[-1] == [] and all(level[b"a"] is level[b"b"] for level in chain[:-1])


@pytest.mark.parametrize(
    ("tail", "match"),
    [
        (
            b"}" + _get(DEPTH) + b"Ns",
            r"SETITEM key or member a tuple of 4 items is not read; allowed: str, byt",
        ),
        (b"(" + _get(DEPTH) + b"\x91", r"FROZENSET key or member a tuple of 4 items is not read"),
        (b"(" + _get(DEPTH) + b"Nd", r"DICT key or member a tuple of 4 items is not read"),
        (b"\x8f(" + _get(DEPTH) + b"\x90", r"ADDITEMS key or member a tuple of 4 items is not read"),
        (
            _get(DEPTH) + _get(DEPTH) + b"\x93",
            r"STACK_GLOBAL of a tuple of 4 items and a tuple of 4 items; allowed: two str",
        ),
    ],
    ids=["dict-key", "frozenset", "dict", "set", "global-name"],
)
def test_nested_shared_tuples_are_never_hashed_or_printed(tail: bytes, match: str) -> None:
    """Hashing or printing the 30-deep tuple would visit 4³⁰ items: it is refused by type instead."""
    with pytest.raises(ValueError, match=f"^laughs: {match}"):
        _read_quickly(PROTO2 + _laughs(b"t") + tail + STOP)


def _frombuffer(raw_arg: bytes, descr_arg: bytes, shape_arg: bytes) -> bytes:
    dtype = b"cnumpy\ndtype\n(" + descr_arg + b"\x89\x88tR"
    return b"cnumpy.core.numeric\n_frombuffer\n(" + raw_arg + dtype + shape_arg + b"\x8c\x01Ct" + b"R"


@pytest.mark.parametrize(
    ("array", "match"),
    [
        (
            _frombuffer(b"C\x00", b"U\x02u1", _get(DEPTH)),
            r"array shape a tuple of 4 items is not a tuple of at",
        ),
        (
            _frombuffer(b"C\x00", _get(DEPTH), b"K\x00\x85"),
            r"array dtype a tuple of 4 items is not a plain nume",
        ),
        (
            _frombuffer(b"C\x00", b"U\x02u1", b"(" + b"K\x01" * 65 + b"t"),
            r"array shape a tuple of 65 items is not a tuple of at most 64",
        ),
        (
            _frombuffer(b"C\x00", b"U\x02u1", b"J\xff\xff\xff\xff\x85"),
            r"array shape \(-1,\) is not a tuple of at most 64 sizes below 2\*\*63",
        ),
    ],
    ids=["shape", "dtype", "65-dims", "negative"],
)
def test_array_records_with_hostile_parts_are_refused_without_printing_them(array: bytes, match: str) -> None:
    with pytest.raises(ValueError, match=f"^laughs: {match}"):
        _read_quickly(PROTO2 + _laughs(b"t") + array + STOP)


def test_a_well_formed_frombuffer_record_reads() -> None:
    raw = PROTO2 + _frombuffer(b"C\x02\x07\x09", b"U\x02u1", b"K\x02\x85") + STOP
    assert np.array_equal(read_pickle_data(raw, "x"), np.array([7, 9], np.uint8))


def test_mark_handling_is_linear_in_the_number_of_items() -> None:
    """40,000 items, then 40,000 MARK + TUPLE: scanning or copying the stack per MARK would be 1.6e9 steps."""
    count = 40_000
    raw = PROTO2 + b"K\x01" * count + b"(t" * count + b"(K\x02K\x03l" + STOP
    assert _read_quickly(raw) == [2, 3]


def test_pop_right_after_a_mark_discards_the_mark() -> None:
    assert read_pickle_data(PROTO2 + b"K\x01(0" + STOP, "x") == 1  # as pickle.py: POP takes the MARK


def test_a_cycle_is_refused() -> None:
    with pytest.raises(ValueError, match=r"^x: pickle holds a reference cycle \(a container inside itself\)"):
        read_pickle_data(PROTO2 + b"]" + _put(0) + _get(0) + b"a" + STOP, "x")  # l = []; l.append(l)


def test_the_opcode_budget() -> None:
    raw = pickle.dumps(list(range(20)), protocol=2)
    assert read_pickle_data(raw, "x") == list(range(20))
    with pytest.raises(
        ValueError, match=r"^x: more than 10 pickle opcodes; a CIFAR-10 batch needs under 100,000$"
    ):
        read_pickle_data(raw, "x", max_opcodes=10)


def test_a_real_size_cifar_batch_stays_far_inside_the_budget() -> None:
    """10,000 rows, labels and file names, as the real batches: read identically, a few % of the budget."""
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, (10_000, 3072), dtype=np.uint8)
    labels = rng.integers(0, 10, 10_000).tolist()
    names = [f"image_{i:05d}.png".encode() for i in range(10_000)]
    raw = pickle.dumps({b"data": data, b"labels": labels, b"filenames": names, b"batch_label": b"b1"}, 2)
    batch = read_pickle_data(raw, "data_batch_1", max_opcodes=100_000)
    assert np.array_equal(batch[b"data"], data) and batch[b"labels"] == labels
    assert batch[b"filenames"] == names and batch[b"batch_label"] == b"b1"


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (
            PROTO2 + b"}G" + struct.pack(">d", 0.5) + b"Ns.",
            r"SETITEM key or member 0.5 is not read; allowed: str, bytes, None, bool, ints below 2\*\*61$",
        ),
        (
            PROTO2 + b"}\x8a\x09" + (2**61).to_bytes(9, "little") + b"Ns.",
            r"SETITEM key or member 2305843009213693952 is not read",
        ),
        (PROTO2 + b"(K\x01d.", r"DICT with an odd number of items \(1\); keys and values come in pairs"),
        (PROTO2 + b"\x85.", r"TUPLE1 needs 1 item\(s\) on the stack, found 0"),
        (PROTO2 + b"]K\x01\x85R.", r"REDUCE on something that is not a global"),
    ],
    ids=["float-key", "big-int-key", "odd-dict", "tuple-underflow", "reduce-list"],
)
def test_stream_errors_name_what_is_allowed(raw: bytes, match: str) -> None:
    with pytest.raises(ValueError, match=f"^x: {match}"):
        read_pickle_data(raw, "x")


def test_a_record_that_becomes_an_array_is_no_dict_key() -> None:
    array = pickle.dumps(np.zeros(2, np.uint8), protocol=2)
    with pytest.raises(ValueError, match=r"^x: dict key or member an ndarray is not read; allowed: str"):
        read_pickle_data(PROTO2 + b"}" + array[2:-1] + b"Ns.", "x")


def test_tampered_array_and_codec_records_are_refused() -> None:
    array = pickle.dumps(np.zeros(2, np.uint8), protocol=5)
    wrong_size = array.replace(b"K\x02\x85\x94\x8c\x01C", b"K\x03\x85\x94\x8c\x01C")
    with pytest.raises(
        ValueError, match=r"array of shape \(3,\) and dtype uint8 needs 3 bytes, the pickle holds 2"
    ):
        read_pickle_data(wrong_size, "x")
    with pytest.raises(ValueError, match=r"^x: array data is not bytes in C or F order"):
        read_pickle_data(array.replace(b"\x8c\x01C\x94t", b"\x8c\x01X\x94t"), "x")
    codec = pickle.dumps(b"ab", protocol=2)
    with pytest.raises(ValueError, match=r"^x: _codecs.encode with 'utf_16': only latin1 text is read"):
        read_pickle_data(codec.replace(b"latin1", b"utf_16"), "x")
