"""The selective scan as compiled C loops: ``cpu_c``, the CPU default where a C compiler exists.

The kernels (``cpu_c.c`` + ``cpu_c_kernels.h`` next to this file) walk one (batch, channel) row
at a time with its (d_state) state in registers, fuse delta_bias, softplus, D and the SiLU(z)
gate, and have a hand-written backward that recomputes each row's decays and states in
cache-sized segments and runs the adjoint recurrence in reverse. Like ``chunked`` they only ever
multiply decay factors exp(delta*A) in (0, 1]: nothing is divided by a cumulative decay and
nothing runs in log space. Rows are split over ``torch.get_num_threads()`` OpenMP threads.

The source is compiled on first use (not at import) with the system compiler (``$MVLAB_CC``,
else ``$CC``, else ``cc``) into ``$MVLAB_CACHE/kernels`` (default ``~/.cache/mvlab/kernels``),
keyed by a hash of the source, the compiler, its flags and the CPU; the library is written under
a temporary name and renamed, so concurrent processes never load a half-written file. No torch
headers are involved: a build takes a few seconds, a cached load milliseconds. Without a working
compiler the backend reports itself unavailable, says why once in the log, and ``auto`` uses
``chunked``.

A library in the cache runs as whoever loads it, so the cache is private: the folder is made
with mode 0700, and a folder or library that belongs to another user or that group/others can
write is refused (the backend is then unavailable, with that reason). Each build records the
sha256 of the library next to it (``.so.sha256``); a library whose bytes do not match is rebuilt,
never loaded.
"""
from __future__ import annotations

import ctypes
import fcntl
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import torch

from mvlab.ops.scan.args import (
    ScanBackendUnavailable,
    check_args,
    compute_dtype,
    grads_of_present,
    or_empty,
)
from mvlab.safety import UnsafePathError, check_trusted, private_dir

log = logging.getLogger(__name__)

_SOURCE_DIR = Path(__file__).resolve().parent
_SOURCES = ("cpu_c.c", "cpu_c_kernels.h")
_ABI = 1
_LANES = 8  # rows per vector block in the kernels (MVLAB_LANES)
# Tried in order until one compiles: OpenMP threads and the host's vector units first; the
# plain build still vectorises the inner loops (omp simd) but runs on one thread. Without
# -fno-trapping-math GCC will not turn the selects in the exp into vector blends (nothing here
# reads floating-point exception flags).
_BASE_FLAGS = ("-O3", "-fno-trapping-math")
_FLAG_SETS: tuple[tuple[str, ...], ...] = (
    (*_BASE_FLAGS, "-march=native", "-fopenmp"),
    (*_BASE_FLAGS, "-march=native", "-fopenmp-simd"),
    (*_BASE_FLAGS, "-fopenmp-simd"),
    _BASE_FLAGS,
)
_COMPILE_TIMEOUT_S = 300


def compiler() -> str:
    """The C compiler used: ``$MVLAB_CC``, else ``$CC``, else ``cc``."""
    return os.environ.get("MVLAB_CC") or os.environ.get("CC") or "cc"


def cache_dir() -> Path:
    """Where compiled kernels live: ``$MVLAB_CACHE/kernels``, else ``$XDG_CACHE_HOME/mvlab/kernels``,
    else ``~/.cache/mvlab/kernels`` (the data cache's root, see ``mvlab.data``)."""
    if os.environ.get("MVLAB_CACHE"):
        root = Path(os.environ["MVLAB_CACHE"]).expanduser()
    else:
        root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mvlab"
    return root / "kernels"


def _cpu_identity() -> str:
    """What ``-march=native`` depends on: the CPU's model and feature flags."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.machine() + " " + platform.processor()
    keep = [ln for ln in lines if ln.startswith(("model name", "flags", "Features", "CPU part"))]
    return platform.machine() + "\n" + "\n".join(dict.fromkeys(keep))


def _compiler_identity(cc_path: str) -> str:
    try:
        out = subprocess.run([cc_path, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    return out.stdout.strip()


def _build(cc_path: str) -> tuple[Path | None, str]:
    """Compile the kernels (or find them in the cache): (path of the library, "") or (None, why)."""
    source = b"".join((_SOURCE_DIR / name).read_bytes() for name in _SOURCES)
    identity = "\0".join([_compiler_identity(cc_path), _cpu_identity(), str(_ABI)])
    try:
        folder = private_dir(cache_dir(), "the kernel cache")
    except UnsafePathError as exc:
        return None, str(exc)
    # One build at a time per cache (a lock on the folder itself): concurrent builds of one key
    # could pair one process's library with another's checksum.
    lock = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        errors = []
        for flags in _FLAG_SETS:
            key = hashlib.sha256(source + b"\0" + identity.encode() + b"\0" + " ".join(flags).encode())
            target = folder / f"scan_cpu_c-{key.hexdigest()[:20]}.so"
            if target.exists():
                try:
                    if _verified(target):
                        return target, ""
                except UnsafePathError as exc:
                    return None, str(exc)
                log.warning("selective_scan: %s does not match a checksum recorded when it was "
                            "built (changed since, or built by an older mvlab); rebuilding it",
                            target)
            try:
                built, why = _compile(cc_path, flags, target)
            except OSError as exc:
                return None, f"cannot write to the kernel cache {folder}: {exc} (set $MVLAB_CACHE)"
            if built:
                return target, ""
            errors.append(f"{' '.join(flags)}: {why}")
    finally:
        os.close(lock)  # releases the lock
    return None, f"compiling {_SOURCE_DIR / 'cpu_c.c'} with {cc_path} failed ({'; '.join(errors)})"


def _checksum_path(library: Path) -> Path:
    return library.with_name(library.name + ".sha256")


def _verified(library: Path) -> bool:
    """Whether ``library`` is the file this user built: both it and its recorded checksum are
    ours and writable by no one else (else ``UnsafePathError``), and its sha256 matches."""
    record = _checksum_path(library)
    check_trusted(library, "the kernel library")
    if not record.exists():
        return False  # built before checksums were recorded: rebuild
    check_trusted(record, "the kernel checksum")
    return record.read_text().strip() == hashlib.sha256(library.read_bytes()).hexdigest()


def _compile(cc_path: str, flags: tuple[str, ...], target: Path) -> tuple[bool, str]:
    """Build into a temporary file, record its sha256, then rename both into place."""
    fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}-", suffix=".so", dir=target.parent)
    os.close(fd)
    cmd = [cc_path, *flags, "-shared", "-fPIC", "-I", str(_SOURCE_DIR),
           str(_SOURCE_DIR / "cpu_c.c"), "-o", tmp, "-lm"]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=_COMPILE_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        done, why = None, f"{type(exc).__name__}: {exc}"
    if done is not None and done.returncode == 0:
        os.chmod(tmp, 0o700)  # the linker honours the umask, which may let the group write
        digest = hashlib.sha256(Path(tmp).read_bytes()).hexdigest()
        fd, tmp_record = tempfile.mkstemp(prefix=f".{target.stem}-", suffix=".sha256",
                                          dir=target.parent)
        with os.fdopen(fd, "w") as handle:
            handle.write(digest + "\n")
        os.replace(tmp_record, _checksum_path(target))
        os.replace(tmp, target)  # atomic: other processes see no file or the whole file
        log.debug("selective_scan: compiled the cpu_c kernels with %s", " ".join(flags))
        return True, ""
    Path(tmp).unlink(missing_ok=True)
    if done is not None:
        why = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
    return False, why


class _Layout(ctypes.Structure):
    """bc_layout in cpu_c.c: where channel d of batch element b reads B or C at token t."""

    _fields_ = [("batch_stride", ctypes.c_int64), ("group_stride", ctypes.c_int64),
                ("token_stride", ctypes.c_int64), ("channels_per_group", ctypes.c_int64)]


_P = ctypes.c_void_p


class _Problem(ctypes.Structure):
    """scan_problem in cpu_c.c, field for field."""

    _fields_ = [
        ("batch", ctypes.c_int64), ("dim", ctypes.c_int64), ("length", ctypes.c_int64),
        ("d_state", ctypes.c_int64), ("threads", ctypes.c_int64), ("softplus", ctypes.c_int64),
        ("segment_tokens", ctypes.c_int64),
        ("u", _P), ("delta", _P), ("z", _P), ("A", _P), ("D", _P), ("delta_bias", _P),
        ("B", _P), ("C", _P), ("B_layout", _Layout), ("C_layout", _Layout),
        ("y", _P), ("y_pregate", _P), ("last_state", _P), ("u_lanes", _P), ("x_lanes", _P),
        ("dy", _P), ("dlast", _P),
        ("du", _P), ("ddelta", _P), ("dz", _P), ("dA", _P), ("dB", _P), ("dC", _P), ("dD", _P),
        ("ddelta_bias", _P),
    ]


_lock = threading.Lock()


@functools.lru_cache(maxsize=1)
def _library() -> tuple[ctypes.CDLL | None, str]:
    """The loaded kernels, or (None, why not). Built and loaded once per process."""
    with _lock:
        cc_path = shutil.which(compiler())
        if cc_path is None:
            reason = (f"no C compiler: {compiler()!r} is not on PATH (install gcc or clang, "
                      "or point $MVLAB_CC at one)")
        else:
            path, reason = _build(cc_path)
            if path is not None:
                try:
                    lib = ctypes.CDLL(str(path))
                    if lib.mvlab_scan_abi() != _ABI or lib.mvlab_scan_problem_size() != ctypes.sizeof(_Problem):
                        raise OSError("the library's ABI does not match cpu_c.py")
                except (OSError, AttributeError) as exc:
                    reason = f"loading {path} failed: {exc}"
                else:
                    lib.mvlab_scan_problem_size.restype = ctypes.c_int64
                    for name in ("forward", "backward"):
                        for suffix in ("f32", "f64"):
                            fn = getattr(lib, f"mvlab_scan_{name}_{suffix}")
                            fn.argtypes, fn.restype = [ctypes.POINTER(_Problem)], ctypes.c_int
                    return lib, ""
    log.warning("selective_scan: the 'cpu_c' backend is unavailable: %s. 'auto' uses 'chunked' "
                "on the CPU instead.", reason)
    return None, reason


def unavailable_reason(device: torch.device | str = "cpu") -> str:
    """Why ``cpu_c`` cannot run on ``device`` ("" when it can). Builds the kernels on first call."""
    if torch.device(device).type != "cpu":
        return f"it runs on the CPU only, not on {torch.device(device).type}"
    return _library()[1]


def is_available(device: torch.device | str = "cpu") -> bool:
    """The kernels compiled and load here, and ``device`` is the CPU."""
    return not unavailable_reason(device)


# ---- the autograd function ------------------------------------------------------------------------

def _ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _kernel_layout(BC: torch.Tensor, dtype: torch.dtype, dim: int) -> tuple[torch.Tensor, tuple]:
    """B or C with the d_state values of a token contiguous, and its ``_Layout`` fields."""
    if BC.dim() == 2:  # constant (dim, N)
        return BC.to(dtype).contiguous(), (0, BC.shape[1], 0, 1)
    N, L = BC.shape[-2:]
    if BC.dim() == 3:  # (batch, N, L) shared by every channel
        return BC.to(dtype).transpose(1, 2).contiguous(), (L * N, 0, N, dim)
    groups = BC.shape[1]  # (batch, G, N, L): channel d reads group d // (dim / G)
    return BC.to(dtype).transpose(2, 3).contiguous(), (groups * L * N, L * N, N, dim // groups)


def _lanes_shape(u: torch.Tensor) -> tuple[int, int]:
    """u and the step sizes in the kernels' lane layout: 2 x (rows rounded up to LANES) x L."""
    batch, dim, length = u.shape
    return 2, -(-batch * dim // _LANES) * length * _LANES


def _forward(u, delta, A, B, C, D, z, delta_bias, B_layout, C_layout, softplus: bool,
             threads: int, segment: int, keep: bool, keep_pregate: bool):
    """(y, last_state, pregate, lanes). All tensors contiguous in the compute dtype; B and C in
    the kernel layout that ``B_layout``/``C_layout`` describe. ``keep``: gradients are wanted, so
    u and the step sizes are also written in the kernels' lane layout (2 * batch * dim * L values)
    and the backward neither transposes nor recomputes softplus; ``keep_pregate``: the gradient of
    z is wanted, which needs y before the gate. Absent outputs are None."""
    batch, dim, length = u.shape
    N = A.shape[1]
    y = torch.empty_like(u)
    last = u.new_empty(batch, dim, N)
    pregate = torch.empty_like(u) if keep_pregate and z is not None else None
    lanes = u.new_empty(_lanes_shape(u)) if keep else None
    problem = _Problem(batch, dim, length, N, threads or torch.get_num_threads(), int(softplus),
                       segment, _ptr(u), _ptr(delta), _ptr(z), _ptr(A), _ptr(D),
                       _ptr(delta_bias), _ptr(B), _ptr(C), _Layout(*B_layout), _Layout(*C_layout),
                       _ptr(y), _ptr(pregate), _ptr(last),
                       *((_ptr(lanes[0]), _ptr(lanes[1])) if lanes is not None else (None, None)))
    _call("forward", u.dtype, problem)
    return y, last, pregate, lanes


def _backward(u, delta, A, B, C, D, z, delta_bias, pregate, lanes, dy, dlast, B_layout,
              C_layout, softplus: bool, threads: int, segment: int, needs: tuple[bool, ...]):
    """Gradients of (u, delta, A, B, C, D, z, delta_bias); None where ``needs`` says no, the
    input is absent, or (for C and z) no gradient reaches y."""
    def grad_like(t, index, wanted=True):
        return torch.empty_like(t) if t is not None and needs[index] and wanted else None

    du, ddelta, dA = grad_like(u, 0), grad_like(delta, 1), grad_like(A, 2)
    dB, dC = grad_like(B, 3), grad_like(C, 4, wanted=dy is not None)
    dD, dz = grad_like(D, 5), grad_like(z, 6, wanted=dy is not None)
    dbias = grad_like(delta_bias, 7)
    dy = dy.to(u.dtype).contiguous() if dy is not None else None
    dlast = dlast.to(u.dtype).contiguous() if dlast is not None else None
    batch, dim, length = u.shape
    problem = _Problem(batch, dim, length, A.shape[1], threads or torch.get_num_threads(),
                       int(softplus), segment,
                       _ptr(u), _ptr(delta), _ptr(z), _ptr(A), _ptr(D), _ptr(delta_bias),
                       _ptr(B), _ptr(C), _Layout(*B_layout), _Layout(*C_layout),
                       None, _ptr(pregate), None, _ptr(lanes[0]), _ptr(lanes[1]),
                       _ptr(dy), _ptr(dlast),
                       _ptr(du), _ptr(ddelta), _ptr(dz), _ptr(dA), _ptr(dB), _ptr(dC),
                       _ptr(dD), _ptr(dbias))
    _call("backward", u.dtype, problem)
    return du, ddelta, dA, dB, dC, dD, dz, dbias


class _CpuScan(torch.autograd.Function):
    """Eager autograd over ``_forward``/``_backward``: (y, last_state)."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, B_layout, C_layout, softplus, threads,
                segment):
        y, last, pregate, lanes = _forward(
            u, delta, A, B, C, D, z, delta_bias, B_layout, C_layout, softplus, threads, segment,
            keep=any(ctx.needs_input_grad), keep_pregate=ctx.needs_input_grad[6])
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, pregate, lanes)
        ctx.config = (B_layout, C_layout, softplus, threads, segment)
        return y, last

    @staticmethod
    @torch.autograd.function.once_differentiable  # the C backward is not itself differentiable
    def backward(ctx, dy, dlast):
        if dy is None and dlast is None:
            return (None,) * 13
        grads = _backward(*ctx.saved_tensors, dy, dlast, *ctx.config, ctx.needs_input_grad)
        return (*grads, None, None, None, None, None)


# The same kernels as torch.library custom ops, which torch.compile traces as single graph nodes
# (``_CpuScan`` would be a graph break per mixer). Absent optional results travel as empty
# tensors: a custom op cannot return None.
@torch.library.custom_op("mvlab::scan_cpu_c", mutates_args=(), device_types="cpu")
def _scan_op(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
             C: torch.Tensor, D: torch.Tensor | None, z: torch.Tensor | None,
             delta_bias: torch.Tensor | None, B_layout: list[int], C_layout: list[int],
             softplus: bool, segment: int, keep: bool
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    y, last, pregate, lanes = _forward(u, delta, A, B, C, D, z, delta_bias, B_layout, C_layout,
                                       softplus, 0, segment, keep, keep)
    return y, last, or_empty(pregate, u), or_empty(lanes, u)


@_scan_op.register_fake
def _scan_op_fake(u, delta, A, B, C, D, z, delta_bias, B_layout, C_layout, softplus, segment,
                  keep):
    pregate = torch.empty_like(u) if keep and z is not None else u.new_empty(0)
    lanes = u.new_empty(_lanes_shape(u)) if keep else u.new_empty(0)
    return torch.empty_like(u), u.new_empty(*u.shape[:2], A.shape[1]), pregate, lanes


@torch.library.custom_op("mvlab::scan_cpu_c_backward", mutates_args=(), device_types="cpu")
def _scan_backward_op(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                      C: torch.Tensor, D: torch.Tensor | None, z: torch.Tensor | None,
                      delta_bias: torch.Tensor | None, pregate: torch.Tensor,
                      lanes: torch.Tensor, dy: torch.Tensor, dlast: torch.Tensor,
                      B_layout: list[int], C_layout: list[int], softplus: bool, segment: int
                      ) -> list[torch.Tensor]:
    grads = _backward(u, delta, A, B, C, D, z, delta_bias, pregate if pregate.numel() else None,
                      lanes, dy, dlast, B_layout, C_layout, softplus, 0, segment, (True,) * 8)
    return [or_empty(g, u) for g in grads]


@_scan_backward_op.register_fake
def _scan_backward_op_fake(u, delta, A, B, C, D, z, delta_bias, pregate, lanes, dy, dlast,
                           B_layout, C_layout, softplus, segment):
    return [or_empty(t, u) if t is None else torch.empty_like(t)
            for t in (u, delta, A, B, C, D, z, delta_bias)]


def _scan_op_setup(ctx, inputs, output):
    u, delta, A, B, C, D, z, delta_bias, B_layout, C_layout, softplus, segment, keep = inputs
    ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, output[2], output[3])
    ctx.config = (B_layout, C_layout, softplus, segment)


def _scan_op_backward(ctx, dy, dlast, _dpregate, _dlanes):
    u, delta, A, B, C, D, z, delta_bias, pregate, lanes = ctx.saved_tensors
    if lanes.numel() == 0:
        raise RuntimeError("selective_scan (cpu_c): the forward ran without keeping what the "
                           "backward needs (it was traced with gradients off)")
    grads = _scan_backward_op(u, delta, A, B, C, D, z, delta_bias, pregate, lanes, dy, dlast,
                              *ctx.config)
    return grads_of_present(grads, (u, delta, A, B, C, D, z, delta_bias)) + (None,) * 5


_scan_op.register_autograd(_scan_op_backward, setup_context=_scan_op_setup)


def _call(name: str, dtype: torch.dtype, problem: _Problem) -> None:
    lib, reason = _library()
    if lib is None:
        raise ScanBackendUnavailable(f"selective_scan: the 'cpu_c' backend is unavailable: {reason}")
    fn = getattr(lib, f"mvlab_scan_{name}_{'f64' if dtype == torch.float64 else 'f32'}")
    if fn(ctypes.byref(problem)):
        raise MemoryError(f"selective_scan (cpu_c): out of memory in the {name} pass")


def selective_scan_cpu_c(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                         return_last_state=False, threads: int | None = None,
                         segment: int | None = None):
    """The selective scan as compiled C loops on the CPU (see ``selective_scan`` for the arguments).

    ``threads``: rows are split over this many threads (default ``torch.get_num_threads()``; the
    result depends on it only through rounding; under torch.compile always the default). ``segment``: tokens per recomputed segment in
    the backward (tests force small ones to exercise the checkpoints; default: cache-sized).
    Raises ``ScanBackendUnavailable`` when the kernels could not be built or the tensors are not
    on the CPU."""
    why = "" if torch.compiler.is_compiling() else unavailable_reason(u.device)
    if why:  # (a compiled caller resolved the backend, and so checked this, before tracing)
        raise ScanBackendUnavailable(f"selective_scan: the 'cpu_c' backend cannot run: {why}. "
                                     "Use backend='auto' or 'chunked'.")
    check_args(u, delta, A, B, C, D=D, z=z, delta_bias=delta_bias)  # the C code trusts the shapes
    batch, dim, length = u.shape
    if batch * dim * length * A.shape[1] == 0:  # nothing to scan: the loop's empty answer
        from mvlab.ops.scan.reference import selective_scan_reference
        return selective_scan_reference(u, delta, A, B, C, D=D, z=z, delta_bias=delta_bias,
                                        delta_softplus=delta_softplus,
                                        return_last_state=return_last_state)
    dtype = compute_dtype(u)

    def ready(t):
        return None if t is None else t.to(dtype).contiguous()

    B_kernel, B_layout = _kernel_layout(B, dtype, dim)
    C_kernel, C_layout = _kernel_layout(C, dtype, dim)
    args = (ready(u), ready(delta), ready(A), B_kernel, C_kernel, ready(D), ready(z),
            ready(delta_bias), list(B_layout), list(C_layout), bool(delta_softplus))
    if torch.compiler.is_compiling():
        keep = torch.is_grad_enabled() and any(
            t is not None and t.requires_grad for t in (u, delta, A, B, C, D, z, delta_bias))
        y, last, _, _ = _scan_op(*args, segment or 0, keep)
    else:
        y, last = _CpuScan.apply(*args, threads or 0, segment or 0)
    y = y.to(u.dtype)
    return (y, last) if return_last_state else y
