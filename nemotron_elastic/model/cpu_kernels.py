# SPDX-License-Identifier: Apache-2.0
"""CPU decoding kernels (csrc/decode.c): built on first use with the system's C compiler, optional.

Three kernels, all for float32 inference on a CPU:
- `few_rows`: decoding sends a few rows through every linear layer. There the BLAS GEMMs of this kind of
  CPU run far below the bandwidth that one row reaches, and a sliced layer costs one BLAS call per run of
  kept units. The kernel reads each kept weight row once for all the rows, in place in the parent's
  weight, with every run of a sliced layer in one call (benchmarks/decode_budgets.py `few_rows`).
- `ssm_step`: one recurrent Mamba2 step with the state (the largest tensor of a decoding step) read and
  written once, where torch's ops pass over it three times (model/ssd.py `ssd_step`).
- `rms_norm`: the RMSNorms of a decoding step's rows, plain or gated per group (Mamba2's output norm), one
  call where torch runs about ten small ops (model/norm.py).

Nothing is installed ahead of time and nothing fails without it: the first call compiles the C file with
the system's compiler (`$CC`, cc, gcc or clang; -O3 -march=native, OpenMP; under a second) into a cache
folder (`$NEMOTRON_ELASTIC_CACHE`, else `$XDG_CACHE_HOME/nemotron_elastic`, else ~/.cache/nemotron_elastic;
a folder under the system's temp dir when that one cannot be written), keyed by the source, the flags and
the CPU. Without a compiler, on a CPU without AVX-512, or with
NEMOTRON_ELASTIC_CPU_KERNELS=0, `library()` is None (`unavailable_reason()` says why) and the callers use
torch's products, which give the same values up to float rounding (another summation order).

    lib = library()                       # None when unavailable (reason: `unavailable_reason()`)
    y = few_rows(x, weight, bias)         # x (M, K) float32, weight (N, K) rows readable with stride
    y = few_rows(x, weight, None, rows=index, segments=((w_col, x_col, length), ...))
    y = ssm_step(state, x, dt, A, B, C, D)  # state (b, h, p, n) updated in place
    y = rms_norm(x, weight, eps, z=gate, groups=g)  # x, gate (..., d) -> (..., d)
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from functools import lru_cache
from pathlib import Path

import torch

SOURCE = Path(__file__).resolve().parent / "csrc" / "decode.c"
FLAGS = ("-O3", "-march=native", "-fopenmp", "-shared", "-fPIC")  # built where it runs (the key has the CPU)
ENV_SWITCH = "NEMOTRON_ELASTIC_CPU_KERNELS"  # "0": never build or use the kernel
MAX_ROWS = 16  # rows per call (measured up to 16: benchmarks/decode_budgets.py `few_rows`)

_lock = threading.Lock()
_state: dict[str, object] = {}  # "lib": the loaded library or None, "why": the reason it is None


def cache_dir() -> Path:
    """Where built libraries are kept (created on demand)."""
    root = os.environ.get("NEMOTRON_ELASTIC_CACHE")
    if root:
        return Path(root)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "nemotron_elastic"


def _compiler() -> str | None:
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
    compiler = _compiler()
    if compiler is None:
        raise RuntimeError("no C compiler (cc, gcc or clang) on the PATH")
    torch.zeros(1)  # torch's libgomp is loaded first, so the kernel's OpenMP calls share its runtime
    if folder is None:  # the cache, else (read-only home, full disk) a folder under the system's temp dir
        try:
            folder = cache_dir() / "kernels"
            path = build(compiler, folder)
        except OSError:
            folder = Path(tempfile.gettempdir()) / f"nemotron_elastic-{os.getuid()}" / "kernels"
            path = build(compiler, folder)
    else:
        path = build(compiler, folder)
    try:
        lib = ctypes.CDLL(str(path))
    except OSError:  # a damaged file under the final name (a full disk, a copy): build it again, once
        path.unlink(missing_ok=True)
        lib = ctypes.CDLL(str(build(compiler, folder)))
    if not lib.ne_supported():
        raise RuntimeError("this CPU has no AVX-512")
    p, i64 = ctypes.c_void_p, ctypes.c_int64
    lib.ne_few_rows_f32.argtypes = [p, i64, p, i64, p, p, p, p, p, i64, p, i64, i64, i64]
    lib.ne_few_rows_f32.restype = None
    lib.ne_ssm_step_f32.argtypes = [p, p, i64, p, i64, p, p, p, i64, p, p, i64, i64, i64, i64, i64]
    lib.ne_ssm_step_f32.restype = None
    lib.ne_rms_norm_f32.argtypes = [p, i64, p, i64, p, p, i64, i64, i64, ctypes.c_float]
    lib.ne_rms_norm_f32.restype = None
    return lib


def library() -> ctypes.CDLL | None:
    """The loaded kernel library, built on the first call; None (once and for all) when unavailable."""
    if "lib" not in _state:
        with _lock:
            if "lib" not in _state:
                try:
                    _state["lib"], _state["why"] = load(), ""
                except Exception as err:  # noqa: BLE001  any failure means: use torch's products
                    _state["lib"], _state["why"] = None, str(err)
    return _state["lib"]  # type: ignore[return-value]


def unavailable_reason() -> str:
    """Why `library()` is None ("" when it is loaded)."""
    library()
    return str(_state["why"])


def applies(x: torch.Tensor, weight: torch.Tensor, rows: int) -> bool:
    """Whether `few_rows` takes this product: float32 on a CPU, no grad, 1..MAX_ROWS rows, the weight's
    rows contiguous (a view of a parent's weight qualifies), and the library available."""
    return (
        x.dtype == torch.float32
        and weight.dtype == torch.float32
        and x.device.type == "cpu"
        and 1 <= rows <= MAX_ROWS
        and weight.dim() == 2
        and weight.stride(1) == 1
        and not torch.is_grad_enabled()
        and library() is not None
    )


@lru_cache(maxsize=4096)
def _segments(segments: tuple[tuple[int, int, int], ...]) -> tuple[ctypes.Array, ctypes.Array, ctypes.Array]:
    """(weight column, x column, length) per segment -> three ctypes int64 arrays (cached: few distinct)."""
    array = ctypes.c_int64 * len(segments)
    return tuple(array(*(s[j] for s in segments)) for j in range(3))  # type: ignore[return-value]


def few_rows(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    rows: torch.Tensor | None = None,
    segments: tuple[tuple[int, int, int], ...] | None = None,
) -> torch.Tensor:
    """x (M, width) @ weight[rows][:, columns]^T + bias[rows] -> (M, N) float32, with the kernel.

    Args:
        x: (M, width) float32, M <= MAX_ROWS; its last dim is made contiguous if it is not.
        weight: (R, C) float32 whose last dim is contiguous (a strided view of a larger weight is read in
            place).
        bias: (R,) or None.
        rows: (N,) int64 kept weight rows (None: all R rows, N = R).
        segments: ((weight column, x column, length), ...) summed in that order (None: all C columns,
            width = C).
    Callers check `applies` first.
    """
    lib = library()
    m = x.shape[0]
    if x.stride(-1) != 1:
        x = x.contiguous()
    if segments is None:
        segments = ((0, 0, weight.shape[1]),)
    woff, xoff, length = _segments(segments)
    if rows is not None:
        rows = rows if rows.dtype == torch.int64 and rows.is_contiguous() else rows.long().contiguous()
    n = weight.shape[0] if rows is None else rows.numel()
    if bias is not None and bias.stride(0) != 1:
        bias = bias.contiguous()
    y = torch.empty(m, n, dtype=torch.float32)
    if m == 0 or n == 0:
        return y
    lib.ne_few_rows_f32(
        x.data_ptr(), x.stride(0), weight.data_ptr(), weight.stride(0),
        None if rows is None else rows.data_ptr(), None if bias is None else bias.data_ptr(),
        woff, xoff, length, len(segments), y.data_ptr(), n, m, n,
    )  # fmt: skip
    return y


def ssm_step_applies(state: torch.Tensor) -> bool:
    """Whether `ssm_step` takes a step on this state: float32, contiguous, on a CPU, no grad, library built."""
    return (
        state.dtype == torch.float32
        and state.device.type == "cpu"
        and state.is_contiguous()
        and not torch.is_grad_enabled()
        and library() is not None
    )


def _rows(t: torch.Tensor) -> torch.Tensor:
    """t (b, ...) as float32 with contiguous rows (any row stride): what the kernels read in place. Checked
    on the strides, with no torch op when t already qualifies (a decoding step calls this ~50 times)."""
    if t.dtype != torch.float32:
        t = t.float()
    inner, expected = t.stride()[1:], []
    size = 1
    for n in reversed(t.shape[1:]):
        expected.append(size)
        size *= n
    if tuple(reversed(expected)) == inner or t.numel() == 0:
        return t
    return t.contiguous()


Tensor = torch.Tensor


def ssm_step(state: Tensor, x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = None) -> Tensor:
    """One recurrent step, `state` updated in place (model/ssd.py `ssd_step`, inplace=True).

    Args:
        state: (b, h, p, n) float32, contiguous. x: (b, h, p); dt: (b, h), positive; A: (h,), negative;
        B, C: (b, g, n); D: (h,) or None. Inputs of other float dtypes are read as float32.
    Returns:
        y (b, h, p) float32. Callers check `ssm_step_applies` first.
    """
    b, h, p, n = state.shape
    g = B.shape[-2]
    y = torch.empty(b, h, p, dtype=torch.float32)
    if state.numel() == 0:
        return y
    x, dt, B, C = _rows(x), _rows(dt), _rows(B), _rows(C)
    if B.stride(0) != C.stride(0):  # one row stride for both (they are views of one projection, usually)
        B, C = B.contiguous(), C.contiguous()
    A = A if A.dtype == torch.float32 and A.stride(0) == 1 else A.float().contiguous()
    D = D if D is None or (D.dtype == torch.float32 and D.stride(0) == 1) else D.float().contiguous()
    library().ne_ssm_step_f32(
        state.data_ptr(), x.data_ptr(), x.stride(0), dt.data_ptr(), dt.stride(0), A.data_ptr(), B.data_ptr(),
        C.data_ptr(), B.stride(0), None if D is None else D.data_ptr(), y.data_ptr(), b, h, p, n, g,
    )  # fmt: skip
    return y


NORM_MAX_ROWS = 64  # the norm kernel takes decoding steps (prefill and scoring keep torch's ops)


def norm_applies(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether `rms_norm` takes this norm: float32 x and weight on a CPU, no grad, at most NORM_MAX_ROWS rows,
    the library built."""
    return (
        x.dtype == torch.float32
        and weight.dtype == torch.float32
        and x.device.type == "cpu"
        and x.numel() <= NORM_MAX_ROWS * max(1, x.shape[-1])
        and not torch.is_grad_enabled()
        and library() is not None
    )


def rms_norm(
    x: torch.Tensor, weight: torch.Tensor, eps: float, z: torch.Tensor | None = None, groups: int = 1
) -> torch.Tensor:
    """weight * v / sqrt(mean(v^2) + eps) per group of channels, v = x * silu(z) (or x). x, z: (..., d)
    float32; weight: (d,) -> (..., d) float32, contiguous. Callers check `norm_applies` first."""
    d = x.shape[-1]
    flat = _rows(x if x.dim() == 2 else x.reshape(-1, d))
    gate = None if z is None else _rows(z if z.dim() == 2 else z.reshape(-1, d))
    if weight.stride(0) != 1:
        weight = weight.contiguous()
    y = torch.empty(x.shape, dtype=torch.float32)
    if y.numel():
        library().ne_rms_norm_f32(
            flat.data_ptr(), flat.stride(0), None if gate is None else gate.data_ptr(),
            0 if gate is None else gate.stride(0), weight.data_ptr(), y.data_ptr(), flat.shape[0], d, groups, eps,
        )  # fmt: skip
    return y
