"""The allocator tuning: a recording-sized array comes from the heap, not a fresh mapping."""

from __future__ import annotations

import ctypes
import ctypes.util
import subprocess
import sys

import pytest

_PROBE = """
import ctypes, ctypes.util
import numpy as np
from wearcast.allocator import reuse_large_blocks

class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]

libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.mallinfo2.restype = Info

def mapped_while_held():
    before = libc.mallinfo2().hblks
    samples = np.ones((20480, 4))  # one 4-channel IMS recording, 655 kB
    during = libc.mallinfo2().hblks
    del samples
    return during - before

print(mapped_while_held(), reuse_large_blocks(), mapped_while_held())
"""


def _glibc_with_mallinfo2() -> bool:
    try:
        ctypes.CDLL(ctypes.util.find_library("c")).mallinfo2  # noqa: B018
    except (OSError, AttributeError, TypeError):
        return False
    return True


@pytest.mark.skipif(not _glibc_with_mallinfo2(), reason="needs glibc 2.33+ (mallinfo2)")
def test_a_recordings_array_is_mapped_afresh_by_default_and_reused_from_the_heap_once_tuned():
    out = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == ["1", "True", "0"]
