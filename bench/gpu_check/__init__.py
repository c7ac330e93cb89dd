"""One prepared command that proves every CUDA path and measures the real workloads on a GPU.

    python -m bench.gpu_check [--smoke] [--out DIR] [--sections correctness tower eval train]

See `__main__.py` for the sections and `bench/GPU_CHECK.md` for what the report holds.
Importing this package imports nothing heavy (no torch).
"""
