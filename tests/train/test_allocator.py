"""fastdstn.train.allocator: the CLI keeps freed memory for reuse unless the user configured the allocator."""
import platform
import subprocess
import sys

import pytest

from fastdstn.train.allocator import _user_chose_allocator, keep_freed_memory


@pytest.mark.parametrize("environ,chosen", [
    ({}, ""),
    ({"PATH": "/bin"}, ""),
    ({"LD_PRELOAD": "/usr/lib/libjemalloc.so.2"}, "LD_PRELOAD"),
    ({"MALLOC_ARENA_MAX": "2"}, "MALLOC_ARENA_MAX"),
    ({"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=0"}, "GLIBC_TUNABLES"),
    ({"FASTDSTN_KEEP_FREED_MEMORY": "0"}, "FASTDSTN_KEEP_FREED_MEMORY"),
    ({"FASTDSTN_KEEP_FREED_MEMORY": "1"}, ""),
])
def test_user_choice_is_respected(environ, chosen):
    assert _user_chose_allocator(environ) == chosen
    if chosen:
        assert keep_freed_memory(environ) is False


@pytest.mark.skipif(platform.system() != "Linux" or not platform.libc_ver()[0] == "glibc", reason="glibc only")
def test_sets_glibc_malloc_in_a_fresh_process():
    code = "from fastdstn.train.allocator import keep_freed_memory; print(keep_freed_memory({}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "True"
