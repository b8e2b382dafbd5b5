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

Cost: the work is linear in the file's size, so a small file is cheap whatever it holds.

- An object the memo shares (GET, DUP) stays one object: it is converted once and the result shared,
  never copied per reference, so a few hundred bytes nesting shared lists 30 deep ("billion laughs")
  give 30 small lists, not 4³⁰ copies. A container inside itself is refused.
- MARK saves the stack and starts a new one, as ``pickle.py`` does, so finding the mark costs
  nothing (no scan or copy of the stack).
- Dict keys and set members must be str, bytes, None, bool or ints below 2⁶¹ (or records that become
  those): each hash is computed once (str, bytes: seeded, cached) or in O(1) (ints) and cannot be
  made to collide, so no nested tuple is hashed and no dict degrades into a list. Error messages
  never print a nested container, a long string or a huge int.
- At most ``max_opcodes`` opcodes are run (a CIFAR-10 batch needs 30,000 to 90,000); every value is at
  most as large as the file, and each opcode adds at most one object.
"""

from __future__ import annotations

import math
import pickletools
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

NUMERIC_DTYPE = re.compile(r"[<>|=]?[biuf][1248]")  # bool, ints, floats: never object dtype
RECONSTRUCT = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct")}
FROMBUFFER = {("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer")}
MAX_OPCODES = 1_000_000  # a CIFAR-10 batch runs 30,000 (90,000 if Python 3 re-pickled it at protocol 2)
MAX_NDIM = 64  # numpy's own limit on array dimensions
HASH_SAFE_INT = 2**61 - 1  # ints smaller than this in size hash to distinct values (CPython's modulus)


class Refused(ValueError):
    """The pickle asks for something other than plain data, or more work than plain data needs."""


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
_CONTAINERS = (list, tuple, dict, set, frozenset, _Call, _Global)


def read_pickle_data(raw: bytes, source: str, *, max_opcodes: int = MAX_OPCODES) -> Any:
    """The data structure a pickle describes: dicts, lists, tuples, str, bytes, numbers, numpy arrays.

    Objects the pickle shares (memo references) are shared in the result too. Raises ValueError
    naming ``source`` for anything else, for a reference cycle and past ``max_opcodes`` opcodes.
    """
    try:
        return _Materializer().value(_run(raw, max_opcodes))
    except Refused as error:
        raise ValueError(f"{source}: {error}") from None
    except (ValueError, IndexError, KeyError, TypeError, AttributeError, RecursionError) as error:
        # malformed streams: genops' own errors, stack underflow, unhashable keys, nesting too deep
        raise ValueError(f"{source}: not a readable data pickle ({type(error).__name__}: {error})") from None


class _Machine:
    """pickle's stack machine (as ``pickle.py``'s ``_Unpickler``): a stack, saved stacks, the memo."""

    def __init__(self) -> None:
        self.stack: list[Any] = []
        self.metastack: list[list[Any]] = []  # the stacks saved by each open MARK
        self.memo: dict[int, Any] = {}

    def mark(self) -> None:
        self.metastack.append(self.stack)
        self.stack = []

    def pop_mark(self) -> list[Any]:
        """The items pushed since the topmost MARK (O(1): they are the current stack)."""
        items = self.stack
        self.stack = self.metastack.pop()  # IndexError without a MARK: "not a readable data pickle"
        return items


def _run(raw: bytes, max_opcodes: int) -> Any:
    """Execute the opcode stream with inert semantics; return the object STOP would return."""
    machine = _Machine()
    for count, (opcode, arg, _) in enumerate(pickletools.genops(raw), start=1):
        if count > max_opcodes:
            raise Refused(f"more than {max_opcodes} pickle opcodes; a CIFAR-10 batch needs under 100,000")
        op = opcode.name
        if op in ("PROTO", "FRAME"):
            continue
        if op == "STOP":
            return machine.stack.pop()
        handled = (
            _push_value(op, arg, machine.stack)
            or _move(op, arg, machine)
            or _build_container(op, machine)
            or _record_object(op, arg, machine.stack)
        )
        if not handled:  # INST, OBJ, NEWOBJ, PERSID, EXT*, out-of-band buffers: never needed for array data
            raise Refused(f"unsupported pickle opcode {op}")
    raise Refused("pickle ends without STOP")


def _push_value(op: str, arg: Any, stack: list[Any]) -> bool:
    """Constants, numbers, strings and bytes; False if ``op`` is none of those."""
    if op in _CONSTANT:
        value = _CONSTANT[op]
        stack.append(value() if callable(value) else value)
    elif op in _VALUE:
        stack.append(arg)
    elif op in _PY2_STR:
        stack.append(arg.encode("latin-1"))
    elif op == "BYTEARRAY8":
        stack.append(bytes(arg))
    else:
        return False
    return True


def _move(op: str, arg: Any, machine: _Machine) -> bool:
    """Marks, POP, DUP and the memo; False if ``op`` is none of those."""
    stack = machine.stack
    if op == "MARK":
        machine.mark()
    elif op == "POP":
        if stack:
            stack.pop()
        else:  # pickle.py: POP right after a MARK discards the mark
            machine.pop_mark()
    elif op == "POP_MARK":
        machine.pop_mark()
    elif op == "DUP":
        stack.append(stack[-1])
    elif op in ("PUT", "BINPUT", "LONG_BINPUT"):
        machine.memo[arg] = stack[-1]
    elif op == "MEMOIZE":
        machine.memo[len(machine.memo)] = stack[-1]
    elif op in ("GET", "BINGET", "LONG_BINGET"):
        stack.append(machine.memo[arg])  # the same object, shared: never a copy
    else:
        return False
    return True


def _build_container(op: str, machine: _Machine) -> bool:
    """Tuples, lists, dicts, sets and what is added to them; False if ``op`` is none of those."""
    if op in ("TUPLE1", "TUPLE2", "TUPLE3"):
        stack, size = machine.stack, int(op[-1])
        if len(stack) < size:
            raise Refused(f"{op} needs {size} item(s) on the stack, found {len(stack)}")
        items = tuple(stack[-size:])
        del stack[-size:]
        stack.append(items)
    elif op in ("TUPLE", "LIST"):
        items = machine.pop_mark()
        machine.stack.append(tuple(items) if op == "TUPLE" else items)
    elif op == "FROZENSET":
        items = machine.pop_mark()  # first: it replaces machine.stack
        machine.stack.append(frozenset(_key(item, op) for item in items))
    elif op == "DICT":
        items = machine.pop_mark()
        machine.stack.append(dict(_pairs(items, op)))
    elif op == "APPEND":
        value = machine.stack.pop()
        _expect(machine.stack[-1], list, op).append(value)
    elif op == "APPENDS":
        items = machine.pop_mark()
        _expect(machine.stack[-1], list, op).extend(items)
    elif op == "SETITEM":
        value, key = machine.stack.pop(), machine.stack.pop()
        _expect(machine.stack[-1], dict, op)[_key(key, op)] = value
    elif op == "SETITEMS":
        items = machine.pop_mark()
        _expect(machine.stack[-1], dict, op).update(_pairs(items, op))
    elif op == "ADDITEMS":
        items = machine.pop_mark()
        _expect(machine.stack[-1], set, op).update(_key(item, op) for item in items)
    else:
        return False
    return True


def _record_object(op: str, arg: Any, stack: list[Any]) -> bool:
    """Globals, calls and BUILD, kept as inert records; False if ``op`` is none of those."""
    if op == "GLOBAL":
        module, name = arg.split(" ", 1)
        stack.append(_Global(module, name))
    elif op == "STACK_GLOBAL":
        name, module = stack.pop(), stack.pop()
        if not (isinstance(module, str) and isinstance(name, str)):
            raise Refused(f"STACK_GLOBAL of {_describe(module)} and {_describe(name)}; allowed: two str")
        stack.append(_Global(module, name))
    elif op == "REDUCE":
        args = stack.pop()
        stack.append(_Call(stack.pop(), args))
    elif op == "BUILD":
        state = stack.pop()
        _expect(stack[-1], _Call, op).state = state
    else:
        return False
    return True


def _key(value: Any, op: str) -> Any:
    """``value`` if it may be a dict key or set member: hashing it is O(1) and cannot be made to collide."""
    if value is None or isinstance(value, (str, bytes, bool, _Call, _Global)):  # str, bytes: seeded hashes
        return value
    if isinstance(value, int) and abs(value) < HASH_SAFE_INT:
        return value
    allowed = "str, bytes, None, bool, ints below 2**61"
    raise Refused(f"{op} key or member {_describe(value)} is not read; allowed: {allowed}")


def _pairs(items: list[Any], op: str) -> Iterator[tuple[Any, Any]]:
    """(key, value) pairs from alternating items, each key checked by :func:`_key`."""
    if len(items) % 2:
        raise Refused(f"{op} with an odd number of items ({len(items)}); keys and values come in pairs")
    return ((_key(key, op), value) for key, value in zip(items[::2], items[1::2], strict=True))


def _expect(obj: Any, kind: type, op: str) -> Any:
    if not isinstance(obj, kind):
        raise Refused(f"{op} applied to {type(obj).__name__}, expected {kind.__name__}")
    return obj


def _describe(value: Any) -> str:
    """A short description for an error message: never a nested container, a huge int or a long string."""
    if _short_atom(value):
        return repr(value)
    if isinstance(value, (tuple, list)):
        if len(value) <= 8 and all(_short_atom(item) for item in value):
            return repr(value)
        return f"a {type(value).__name__} of {len(value)} items"  # the items may nest 4³⁰ deep
    name = type(value).__name__
    return f"{'an' if name[0] in 'aeiou' or name.startswith('nd') else 'a'} {name}"  # an ndarray


def _short_atom(value: Any) -> bool:
    return (
        value is None
        or isinstance(value, float)
        or (isinstance(value, (str, bytes)) and len(value) <= 40)
        or (isinstance(value, int) and abs(value) < 10**40)
    )


class _Materializer:
    """Turns the machine's containers and records into values, each shared object exactly once."""

    def __init__(self) -> None:
        self.done: dict[int, tuple[Any, Any]] = {}  # id → (object, its value); the object pins the id
        self.active: set[int] = set()  # ids being converted: meeting one again is a cycle

    def value(self, obj: Any) -> Any:
        if not isinstance(obj, _CONTAINERS):
            return obj  # None, bool, int, float, str, bytes
        key = id(obj)
        if key in self.done:
            return self.done[key][1]
        if key in self.active:
            raise Refused(
                "pickle holds a reference cycle (a container inside itself); only acyclic data is read"
            )
        self.active.add(key)
        result = self._convert(obj)
        self.active.discard(key)
        self.done[key] = (obj, result)
        return result

    def _convert(self, obj: Any) -> Any:
        if isinstance(obj, list):
            return [self.value(item) for item in obj]
        if isinstance(obj, tuple):
            return tuple(self.value(item) for item in obj)
        if isinstance(obj, dict):
            return {_key(self.value(k), "dict"): self.value(v) for k, v in obj.items()}
        if isinstance(obj, (set, frozenset)):
            return type(obj)(_key(self.value(item), "set") for item in obj)
        if isinstance(obj, _Global):
            raise Refused(f"refusing pickle global {obj.module}.{obj.name} (only array data is read)")
        return _call(obj, self)


def _call(node: _Call, values: _Materializer) -> Any:
    func = node.func
    if not isinstance(func, _Global):
        raise Refused("REDUCE on something that is not a global")
    key = (func.module, func.name)
    if key == ("_codecs", "encode") and node.state is None:
        text, encoding = values.value(node.args)
        if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
            raise Refused(f"_codecs.encode with {_describe(encoding)}: only latin1 text is read")
        return text.encode("latin-1")
    if key in RECONSTRUCT:
        args, state = node.args, node.state
        is_plain = isinstance(args, tuple) and args and args[0] == _Global("numpy", "ndarray")
        if not (is_plain and isinstance(state, tuple) and len(state) == 5):
            raise Refused("numpy _reconstruct of something other than a plain ndarray")
        _, shape, dtype_node, fortran, raw = state
        order = "F" if fortran else "C"
        return _array(values.value(raw), _dtype(dtype_node), values.value(shape), order)
    if key in FROMBUFFER and node.state is None:
        raw, dtype_node, shape, order = node.args
        return _array(values.value(raw), _dtype(dtype_node), values.value(shape), values.value(order))
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
        raise Refused(f"array dtype {_describe(descr)} is not a plain numeric type")
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
    if not (
        isinstance(shape, tuple)
        and len(shape) <= MAX_NDIM
        and all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2**63 for d in shape)
    ):
        raise Refused(
            f"array shape {_describe(shape)} is not a tuple of at most {MAX_NDIM} sizes below 2**63"
        )
    needed = math.prod(shape) * dtype.itemsize  # exact: Python integers
    if len(raw) != needed:
        raise Refused(
            f"array of shape {shape} and dtype {dtype} needs {needed} bytes, the pickle holds {len(raw)}"
        )
    return np.frombuffer(raw, dtype).reshape(shape, order=order)
