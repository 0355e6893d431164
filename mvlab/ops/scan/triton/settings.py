"""How the Triton kernels are launched: settings chosen by the caller, a plan fixed per call.

``LaunchSettings`` is what a caller may choose (kernel family, tile budget, warps); nothing here
is module state, so two callers (a test, a tile sweep, the model) never see each other's
choice. ``plan`` turns settings and a problem's shape into the ``Launch`` a forward uses; the
backward is handed that same ``Launch``, because it reads the forward's per-chunk state
checkpoints and must chunk the tokens exactly as the forward did. No torch or triton here.
"""
from __future__ import annotations

from dataclasses import dataclass, field

KERNELS = ("chunk", "loop")


def _positive(owner: str, **values: int) -> None:
    for name, value in values.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{owner}.{name} must be a positive int, got {value!r}")


@dataclass(frozen=True)
class ChunkTiles:
    """The chunk kernels: a (BLOCK_D, BLOCK_N, chunk) tile of about ``elements`` values per live
    tensor keeps a chunk in registers without spilling."""

    elements: int = 2048
    chunk: int = 32
    num_warps: int = 4

    def __post_init__(self) -> None:
        _positive("ChunkTiles", elements=self.elements, chunk=self.chunk,
                  num_warps=self.num_warps)


@dataclass(frozen=True)
class LoopTiles:
    """The loop kernels: one token per step with a (block_d, d_state) state in registers;
    ``stages`` > 1 lets Triton pipeline the next tokens' loads (the walk is latency-bound)."""

    block_d: int = 32
    chunk: int = 64
    num_warps: int = 1
    stages: int = 1

    def __post_init__(self) -> None:
        _positive("LoopTiles", block_d=self.block_d, chunk=self.chunk,
                  num_warps=self.num_warps, stages=self.stages)


@dataclass(frozen=True)
class LaunchSettings:
    """Which kernel family runs and with which tiles.

    The defaults are the fastest forward+backward of the H200 tile sweep at MambaVision-T
    stage 3, batch 128 (results/scan/gpu-h200/triton_tile_sweep.csv: chunk, 2048/32/4);
    ``scripts/gpu_check.py`` repeats that sweep on any GPU."""

    kernel: str = "chunk"
    chunk_tiles: ChunkTiles = field(default_factory=ChunkTiles)
    loop_tiles: LoopTiles = field(default_factory=LoopTiles)

    def __post_init__(self) -> None:
        if self.kernel not in KERNELS:
            raise ValueError(f"LaunchSettings.kernel must be one of {KERNELS}, got {self.kernel!r}")


DEFAULT_SETTINGS = LaunchSettings()


@dataclass(frozen=True)
class Launch:
    """One call's kernel parameters: fixed at the forward and handed to its backward."""

    loop: bool
    block_d: int
    block_n: int
    chunk: int
    num_warps: int
    stages: int = 1


def next_pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def plan(dim: int, d_state: int, length: int, settings: LaunchSettings = DEFAULT_SETTINGS,
         chunk: int | None = None) -> Launch:
    """The launch for a (dim, d_state, length) scan. ``chunk`` forces the tokens per chunk
    (rounded up to a power of two: tests use short chunks to exercise the carry between them)."""
    block_n = next_pow2(max(d_state, 1))
    if settings.kernel == "loop":
        tiles = settings.loop_tiles
        tokens = next_pow2(chunk) if chunk else min(tiles.chunk, next_pow2(max(length, 1)))
        return Launch(True, max(1, min(next_pow2(dim), tiles.block_d)), block_n, tokens,
                      tiles.num_warps, tiles.stages)
    tiles = settings.chunk_tiles
    tokens = next_pow2(chunk) if chunk else min(tiles.chunk, next_pow2(max(length, 1)))
    # a forced chunk (tests) changes the tokens per chunk only; the channel block stays the one
    # the tile budget gives at the settings' own chunk
    budget_chunk = min(tiles.chunk, next_pow2(max(length, 1)))
    block_d = max(1, min(next_pow2(dim), tiles.elements // (block_n * budget_chunk)))
    return Launch(False, block_d, block_n, tokens, tiles.num_warps)
