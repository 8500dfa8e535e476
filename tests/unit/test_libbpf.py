"""kernel/libbpf.py, the one binding to libbpf.so.1: a library that lacks a function the binding declares is
one clear line (what `check` shows as its libbpf line), never a traceback."""

import ctypes

import pytest
from socketsnoop.errors import SnoopError
from socketsnoop.kernel import libbpf


def test_a_missing_function_is_one_line():
    libc = ctypes.CDLL(None)  # a real library, without libbpf's functions
    with pytest.raises(SnoopError) as e:
        libbpf._proto(libc, "bpf_object__next_map", ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)
    assert str(e.value) == "libbpf.so.1 has no function bpf_object__next_map: libbpf 1.0 or newer is needed"
