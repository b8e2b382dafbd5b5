"""Read the data inside a pickle without unpickling it.

CIFAR-10's python batches are pickles, and ``pickle.load`` calls whatever callable the file names.
Here nothing from the file is ever called or imported: ``pickletools.genops`` only parses the
opcode stream, and a small stack machine builds plain containers from it, turning every global,
call (REDUCE) and BUILD into an inert record. Afterwards exactly three record shapes become values:

- numpy's array pickle, ``_reconstruct(ndarray, (0,), b"b")`` + BUILD ``(1, shape, dtype, fortran, raw)``
  (protocols 2–4), or ``_frombuffer(raw, dtype, shape, order)`` (protocol 5), with a plain numeric dtype
  ``dtype("u1" | "i8" | "f4" …)``: the array is ``np.frombuffer(raw, dtype)``;
- ``_codecs.encode(text, "latin1")``, how Python 3 writes bytes under protocol 2.

Any other global (``os.system``, ``builtins.eval``, …) is refused by name, so a hostile file can at
worst make this function raise ValueError.
"""

from __future__ import annotations

import pickletools
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

NUMERIC_DTYPE = re.compile(r"[<>|=]?[biuf][1248]")  # bool, ints, floats: never object dtype
RECONSTRUCT = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct")}
FROMBUFFER = {("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer")}


class Refused(ValueError):
    """The pickle asks for something other than plain data."""


@dataclass(frozen=True)
class _Global:
    module: str
    name: str


@dataclass(eq=False)
class _Call:
    func: Any  # a _Global when well formed
    args: Any  # a tuple when well formed
    state: Any = field(default=None)  # set by BUILD


_MARK = object()
_CONSTANT = {"NONE": None, "NEWTRUE": True, "NEWFALSE": False, "EMPTY_DICT": dict, "EMPTY_LIST": list}
_CONSTANT |= {"EMPTY_TUPLE": tuple, "EMPTY_SET": set}
_PY2_STR = {"STRING", "BINSTRING", "SHORT_BINSTRING"}  # Python 2 str: bytes, as pickle's encoding="bytes"
_VALUE = {"INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4", "FLOAT", "BINFLOAT"}
_VALUE |= {
    "BINBYTES",
    "SHORT_BINBYTES",
    "BINBYTES8",
    "UNICODE",
    "BINUNICODE",
    "SHORT_BINUNICODE",
    "BINUNICODE8",
}


def read_pickle_data(raw: bytes, source: str) -> Any:
    """The data structure a pickle describes: dicts, lists, tuples, str, bytes, numbers, numpy arrays."""
    try:
        return _materialize(_run(raw))
    except Refused as error:
        raise ValueError(f"{source}: {error}") from None
    except (ValueError, IndexError, KeyError, TypeError, AttributeError, RecursionError) as error:
        # malformed streams: genops' own errors, stack underflow, unhashable keys, cycles
        raise ValueError(f"{source}: not a readable data pickle ({type(error).__name__}: {error})") from None


def _run(raw: bytes) -> Any:
    """Execute the opcode stream with inert semantics; return the object STOP would return."""
    stack: list[Any] = []
    memo: dict[int, Any] = {}

    def pop_mark() -> list[Any]:
        at = len(stack) - 1 - stack[::-1].index(_MARK)
        items = stack[at + 1 :]
        del stack[at:]
        return items

    for opcode, arg, _ in pickletools.genops(raw):
        op = opcode.name
        if op in ("PROTO", "FRAME"):
            continue
        if op == "STOP":
            return stack.pop()
        if op in _CONSTANT:
            value = _CONSTANT[op]
            stack.append(value() if callable(value) else value)
        elif op in _VALUE:
            stack.append(arg)
        elif op in _PY2_STR:
            stack.append(arg.encode("latin-1"))
        elif op == "BYTEARRAY8":
            stack.append(bytes(arg))
        elif op == "MARK":
            stack.append(_MARK)
        elif op == "POP":
            stack.pop()
        elif op == "POP_MARK":
            pop_mark()
        elif op == "DUP":
            stack.append(stack[-1])
        elif op in ("PUT", "BINPUT", "LONG_BINPUT"):
            memo[arg] = stack[-1]
        elif op == "MEMOIZE":
            memo[len(memo)] = stack[-1]
        elif op in ("GET", "BINGET", "LONG_BINGET"):
            stack.append(memo[arg])
        elif op in ("TUPLE1", "TUPLE2", "TUPLE3"):
            size = int(op[-1])
            items = tuple(stack[-size:])
            del stack[-size:]
            stack.append(items)
        elif op in ("TUPLE", "LIST", "FROZENSET"):
            stack.append({"TUPLE": tuple, "LIST": list, "FROZENSET": frozenset}[op](pop_mark()))
        elif op == "DICT":
            items = pop_mark()
            stack.append(dict(zip(items[::2], items[1::2], strict=True)))
        elif op == "APPEND":
            value = stack.pop()
            _expect(stack[-1], list, op).append(value)
        elif op == "APPENDS":
            items = pop_mark()
            _expect(stack[-1], list, op).extend(items)
        elif op == "SETITEM":
            value, key = stack.pop(), stack.pop()
            _expect(stack[-1], dict, op)[key] = value
        elif op == "SETITEMS":
            items = pop_mark()
            _expect(stack[-1], dict, op).update(zip(items[::2], items[1::2], strict=True))
        elif op == "ADDITEMS":
            items = pop_mark()
            _expect(stack[-1], set, op).update(items)
        elif op == "GLOBAL":
            module, name = arg.split(" ", 1)
            stack.append(_Global(module, name))
        elif op == "STACK_GLOBAL":
            name, module = stack.pop(), stack.pop()
            stack.append(_Global(str(module), str(name)))
        elif op == "REDUCE":
            args = stack.pop()
            stack.append(_Call(stack.pop(), args))
        elif op == "BUILD":
            state = stack.pop()
            _expect(stack[-1], _Call, op).state = state
        else:  # INST, OBJ, NEWOBJ, PERSID, EXT*, out-of-band buffers: never needed for array data
            raise Refused(f"unsupported pickle opcode {op}")
    raise Refused("pickle ends without STOP")


def _expect(obj: Any, kind: type, op: str) -> Any:
    if not isinstance(obj, kind):
        raise Refused(f"{op} applied to {type(obj).__name__}, expected {kind.__name__}")
    return obj


def _materialize(obj: Any) -> Any:
    if isinstance(obj, list):
        return [_materialize(item) for item in obj]
    if isinstance(obj, tuple):
        return tuple(_materialize(item) for item in obj)
    if isinstance(obj, dict):
        return {_materialize(k): _materialize(v) for k, v in obj.items()}
    if isinstance(obj, (set, frozenset)):
        return type(obj)(_materialize(item) for item in obj)
    if isinstance(obj, _Global):
        raise Refused(f"refusing pickle global {obj.module}.{obj.name} (only array data is read)")
    if isinstance(obj, _Call):
        return _call(obj)
    return obj  # None, bool, int, float, str, bytes


def _call(node: _Call) -> Any:
    func = node.func
    if not isinstance(func, _Global):
        raise Refused("REDUCE on something that is not a global")
    key = (func.module, func.name)
    if key == ("_codecs", "encode") and node.state is None:
        text, encoding = _materialize(node.args)
        if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
            raise Refused(f"_codecs.encode with {encoding!r}: only latin1 text is read")
        return text.encode("latin-1")
    if key in RECONSTRUCT:
        args, state = node.args, node.state
        is_plain = isinstance(args, tuple) and args and args[0] == _Global("numpy", "ndarray")
        if not (is_plain and isinstance(state, tuple) and len(state) == 5):
            raise Refused("numpy _reconstruct of something other than a plain ndarray")
        _, shape, dtype_node, fortran, raw = state
        return _array(_materialize(raw), _dtype(dtype_node), _materialize(shape), "F" if fortran else "C")
    if key in FROMBUFFER and node.state is None:
        raw, dtype_node, shape, order = node.args
        return _array(_materialize(raw), _dtype(dtype_node), _materialize(shape), _materialize(order))
    raise Refused(f"refusing pickle global {func.module}.{func.name} (only array data is read)")


def _dtype(node: Any) -> np.dtype:
    """A numeric dtype from numpy's ``dtype(descr, False, True)`` + BUILD ``(3, byteorder, …)``."""
    if not (
        isinstance(node, _Call) and node.func == _Global("numpy", "dtype") and isinstance(node.args, tuple)
    ):
        raise Refused("array dtype is not a numpy.dtype record")
    descr = node.args[0] if node.args else None
    descr = descr.decode("ascii", "replace") if isinstance(descr, bytes) else descr  # Python 2 str
    if not isinstance(descr, str) or not NUMERIC_DTYPE.fullmatch(descr):
        raise Refused(f"array dtype {descr!r} is not a plain numeric type")
    dtype = np.dtype(descr)
    state = node.state
    byteorder = state[1] if isinstance(state, tuple) and len(state) > 1 else None
    byteorder = byteorder.decode("ascii", "replace") if isinstance(byteorder, bytes) else byteorder
    if byteorder in ("<", ">"):
        dtype = dtype.newbyteorder(byteorder)
    return dtype


def _array(raw: Any, dtype: np.dtype, shape: Any, order: Any) -> np.ndarray:
    if not isinstance(raw, bytes) or order not in ("C", "F"):
        raise Refused("array data is not bytes in C or F order")
    if not (isinstance(shape, tuple) and all(isinstance(d, int) and d >= 0 for d in shape)):
        raise Refused(f"array shape {shape!r} is not a tuple of sizes")
    if len(raw) != int(np.prod(shape)) * dtype.itemsize:
        raise Refused(
            f"array of shape {shape} and dtype {dtype} needs {np.prod(shape) * dtype.itemsize} bytes"
        )
    return np.frombuffer(raw, dtype).reshape(shape, order=order)
