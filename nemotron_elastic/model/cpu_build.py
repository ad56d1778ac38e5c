# SPDX-License-Identifier: Apache-2.0
"""Building the CPU decoding kernels (csrc/decode.c; model/cpu_kernels.py calls them): on first use, with the
system's C compiler, into a cache; never required.

The first call compiles the C file with `$CC`, cc, gcc or clang (-O3 -march=native, OpenMP; under a second)
into a cache folder (`$NEMOTRON_ELASTIC_CACHE`, else `$XDG_CACHE_HOME/nemotron_elastic`, else
~/.cache/nemotron_elastic; a folder under the system's temp dir when that one cannot be written), keyed by
the source, the flags, the compiler and the CPU. A build is written to a temporary name and renamed, so a
killed build or two processes building at once never leave a half-written library under the final name;
a damaged library is built again; old builds are pruned. `load` raises RuntimeError saying why the kernels
cannot be used here (NEMOTRON_ELASTIC_CPU_KERNELS=0, not x86-64, no compiler, a failed compile, no AVX-512).

    lib = load()                          # ctypes.CDLL with the kernels' signatures set
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch

SOURCE = Path(__file__).resolve().parent / "csrc" / "decode.c"
FLAGS = ("-O3", "-march=native", "-fopenmp", "-shared", "-fPIC")  # built where it runs (the key has the CPU)
ENV_SWITCH = "NEMOTRON_ELASTIC_CPU_KERNELS"  # "0": never build or use the kernels


def cache_dir() -> Path:
    """Where built libraries are kept (created on demand)."""
    root = os.environ.get("NEMOTRON_ELASTIC_CACHE")
    if root:
        return Path(root)
    base = os.environ.get("XDG_CACHE_HOME")
    if not base:
        try:
            base = str(Path.home() / ".cache")
        except RuntimeError:  # no home directory known (a bare container user)
            base = tempfile.gettempdir()
    return Path(base) / "nemotron_elastic"


def compiler() -> str | None:
    """The C compiler to build with: $CC, else cc, gcc or clang, the first on the PATH (None: none)."""
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return name
    return None


def _cpu() -> str:
    """This CPU's model and feature flags: -march=native code is only reused on the CPU it was built for."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return os.uname().machine
    return "|".join(sorted({line for line in lines if line.startswith(("model name", "flags"))}))


def build(compiler: str, folder: Path) -> Path:
    """Compile SOURCE once per (source, flags, compiler, CPU) into `folder`; returns the library's path.

    Written to a temporary name and renamed: a killed build, or two processes building at once, never
    leave a half-written library under the final name.
    """
    source = SOURCE.read_bytes()
    key = hashlib.sha256(source + " ".join((compiler, *FLAGS, _cpu())).encode()).hexdigest()[:16]
    target = folder / f"decode-{key}.so"
    if target.exists():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".decode-", suffix=".so", dir=folder)
    os.close(fd)
    try:
        done = subprocess.run([compiler, *FLAGS, str(SOURCE), "-o", tmp, "-lm"], capture_output=True, text=True,
                              timeout=120, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{compiler} failed: {(done.stderr or done.stdout).strip()[:300]}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    _prune(folder, keep=KEEP_BUILDS)
    return target


KEEP_BUILDS = 4  # libraries kept per cache folder (other versions of the source, other checkouts)


def _prune(folder: Path, keep: int) -> None:
    """Remove all but the `keep` newest libraries (a process that has one loaded keeps its mapping)."""
    def age(path: Path) -> float:
        try:
            return path.stat().st_mtime
        except OSError:  # removed meanwhile by another process's prune
            return 0.0

    for old in sorted(folder.glob("decode-*.so"), key=age, reverse=True)[keep:]:
        old.unlink(missing_ok=True)


def load(folder: Path | None = None) -> ctypes.CDLL:
    """Build (if needed) and load the library from `folder` (default: cache_dir() / "kernels").

    Raises RuntimeError saying why it cannot be used here (switched off, not x86-64, no compiler, the
    compile failed, no AVX-512).
    """
    if os.environ.get(ENV_SWITCH, "1") == "0":
        raise RuntimeError(f"switched off by {ENV_SWITCH}=0")
    if platform.machine().lower() not in ("x86_64", "amd64"):
        raise RuntimeError(f"the kernel is x86-64 AVX-512 code; this machine is {platform.machine()}")
    cc = compiler()
    if cc is None:
        raise RuntimeError("no C compiler (cc, gcc or clang) on the PATH")
    torch.zeros(1)  # torch's libgomp is loaded first, so the kernel's OpenMP calls share its runtime
    if folder is None:  # the cache, else (read-only home, full disk) a folder under the system's temp dir
        try:
            folder = cache_dir() / "kernels"
            path = build(cc, folder)
        except OSError:
            user = os.getuid() if hasattr(os, "getuid") else os.environ.get("USERNAME", "user")
            folder = Path(tempfile.gettempdir()) / f"nemotron_elastic-{user}" / "kernels"
            path = build(cc, folder)
    else:
        path = build(cc, folder)
    try:
        lib = ctypes.CDLL(str(path))
    except OSError:  # a damaged file under the final name (a full disk, a copy): build it again, once
        path.unlink(missing_ok=True)
        lib = ctypes.CDLL(str(build(cc, folder)))
    if not lib.ne_supported():
        raise RuntimeError("this CPU has no AVX-512")
    p, i64 = ctypes.c_void_p, ctypes.c_int64
    lib.ne_few_rows_f32.argtypes = [p, i64, p, i64, p, p, p, p, p, i64, p, i64, i64, i64]
    lib.ne_few_rows_f32.restype = None
    lib.ne_ssm_step_f32.argtypes = [p, p, i64, p, i64, p, p, p, i64, p, p, i64, i64, i64, i64, i64]
    lib.ne_ssm_step_f32.restype = None
    lib.ne_rms_norm_f32.argtypes = [p, i64, p, i64, p, p, i64, i64, i64, ctypes.c_float]
    lib.ne_rms_norm_f32.restype = None
    lib.ne_conv_step_f32.argtypes = [p, p, i64, p, p, p, p, p, i64, i64, i64]
    lib.ne_conv_step_f32.restype = None
    lib.ne_tiled_f32.argtypes = [p, i64, p, i64, p, i64, p, p, p, p, i64, p, i64, i64]
    lib.ne_tiled_f32.restype = None
    f32 = ctypes.c_float
    lib.ne_mamba_step_f32.argtypes = [p, i64, p, p, p, p, p, i64, p, f32, p, p, p, i64, i64, i64, i64, p, f32, p, p,
                                      i64]  # fmt: skip
    lib.ne_mamba_step_f32.restype = None
    return lib
