"""The inert pickle reader: array data in every protocol, everything else refused, nothing executed."""

from __future__ import annotations

import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest

from ddpm.data.pickle_reader import read_pickle_data


def py2_batch_bytes(data: np.ndarray, labels: list[int]) -> bytes:
    """The opcode stream Python 2's cPickle (protocol 2) wrote for the real CIFAR-10 batches.

    Python 2 str became SHORT_BINSTRING / BINSTRING; numpy lived in numpy.core.
    """

    def short(b: bytes) -> bytes:
        return b"U" + bytes([len(b)]) + b

    out = b"\x80\x02}q\x01(" + short(b"data") + b"q\x02"  # PROTO 2, EMPTY_DICT, BINPUT, MARK, key
    out += (
        b"cnumpy.core.multiarray\n_reconstruct\nq\x03cnumpy\nndarray\nq\x04K\x00\x85"
        + short(b"b")
        + b"\x87Rq\x05"
    )
    out += b"(K\x01M" + struct.pack("<H", data.shape[0]) + b"M" + struct.pack("<H", data.shape[1]) + b"\x86"
    out += b"cnumpy\ndtype\nq\x06" + short(b"u1") + b"K\x00K\x01\x87Rq\x07"  # dtype('u1', 0, 1)
    out += b"(K\x03" + short(b"|") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"  # its BUILD state
    out += b"\x89T" + struct.pack("<i", data.nbytes) + data.tobytes() + b"tb"  # fortran=False, raw bytes
    out += short(b"labels") + b"]q\x08(" + b"".join(b"K" + bytes([label]) for label in labels) + b"e"
    out += short(b"batch_label") + short(b"training batch 1 of 5") + b"u."  # SETITEMS, STOP
    return out


def test_python2_cpickle_layout() -> None:
    data = np.arange(2 * 3072, dtype=np.uint32).astype(np.uint8).reshape(2, 3072)
    batch = read_pickle_data(py2_batch_bytes(data, [3, 9]), "data_batch_1")
    assert set(batch) == {b"data", b"labels", b"batch_label"}
    assert np.array_equal(batch[b"data"], data) and batch[b"data"].dtype == np.uint8
    assert batch[b"labels"] == [3, 9] and batch[b"batch_label"] == b"training batch 1 of 5"


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_every_protocol_round_trips_plain_data(protocol: int) -> None:
    value = {
        b"data": np.arange(12, dtype=np.uint8).reshape(3, 4),
        "floats": np.linspace(0, 1, 6, dtype=">f8").reshape(2, 3, order="F"),
        "mixed": [1, -(2**40), 2.5, None, True, "text", b"bytes", (1, 2)],
    }
    if protocol >= 4:  # older protocols write sets as calls to builtins.set, which is refused
        value["mixed"] += [{3}, frozenset({4})]
    result = read_pickle_data(pickle.dumps(value, protocol=protocol), "x")
    assert np.array_equal(result[b"data"], value[b"data"])
    assert (
        np.array_equal(result["floats"], value["floats"]) and result["floats"].dtype == value["floats"].dtype
    )
    assert result["mixed"] == value["mixed"]


def test_shared_references_stay_shared() -> None:
    inner = [1, 2]
    result = read_pickle_data(pickle.dumps({"a": inner, "b": inner}, protocol=2), "x")
    assert result == {"a": [1, 2], "b": [1, 2]}


class _Canary:
    """Pickles as a call to os.system that would create a file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.path}",))


class _EvalCall:
    def __reduce__(self) -> tuple:
        return (eval, ("1 + 1",))


@pytest.mark.parametrize("protocol", [0, 2, 5])
def test_a_hostile_global_is_refused_without_running(tmp_path: Path, protocol: int) -> None:
    canary = tmp_path / "canary"
    raw = pickle.dumps({b"data": _Canary(canary), b"labels": [0]}, protocol=protocol)
    with pytest.raises(ValueError, match=r"batch: refusing pickle global (posix|nt)\.system"):
        read_pickle_data(raw, "batch")
    assert not canary.exists()
    with pytest.raises(ValueError, match=r"refusing pickle global (builtins|__builtin__)\.eval"):
        read_pickle_data(pickle.dumps([_EvalCall()], protocol=protocol), "batch")


def test_numpy_shapes_other_than_plain_numeric_arrays_are_refused() -> None:
    with pytest.raises(ValueError, match=r"array dtype 'O8' is not a plain numeric type"):
        read_pickle_data(pickle.dumps(np.array([1, "a"], dtype=object), protocol=2), "x")
    with pytest.raises(ValueError, match=r"refusing pickle global numpy\.dtype"):
        read_pickle_data(pickle.dumps(np.dtype("u1"), protocol=2), "x")
    raw = pickle.dumps(np.zeros(3, np.uint8), protocol=2)
    assert b"cnumpy\nndarray\n" in raw
    with pytest.raises(ValueError, match=r"x: numpy _reconstruct of something other than a plain ndarray"):
        read_pickle_data(raw.replace(b"cnumpy\nndarray\n", b"cnumpy\nmatrix\n"), "x")


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (b"", r"not a readable data pickle"),
        (b"\x80\x02]q\x00(K\x01", r"not a readable data pickle"),  # no STOP
        (b"\x80\x02K\x01e.", r"not a readable data pickle"),  # APPENDS without a mark
        (b"\x80\x02K\x01K\x02a.", r"APPEND applied to int, expected list"),
        (b"\x80\x02(cos\nsystem\no.", r"unsupported pickle opcode OBJ"),
    ],
)
def test_malformed_streams(raw: bytes, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        read_pickle_data(raw, "x")
