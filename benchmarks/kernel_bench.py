"""Benchmark the SwinWindowAttention CUDA kernel against PyTorch on Swin-T and Swin-B stage shapes.

Compared, all from the same qkv [B, H·W, 3C] to the output [B, H·W, C] in image order:
  kernel   our kernel through the C ABI (one launch)
  eager    timm-style: roll, window partition, q·kᵀ + rel bias + mask, softmax, ·v, reverse, roll back
  sdpa     the same layout work around F.scaled_dot_product_attention with bias + mask as attn_mask
  compile  torch.compile of eager

Needs a CUDA GPU with torch, nvcc and cmake (no TensorRT). Writes build/bench/kernel_bench_<device>_<UTC time>.json
(never replacing a file; `python -m benchmarks.report --commit <json>` copies it into benchmarks/results/).

    python -m benchmarks.kernel_bench [--dtypes fp16 fp32] [--batches 1 8 64] [--iters 200]
"""

from __future__ import annotations

import argparse
import functools
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

from benchmarks.environment import collect as collect_environment
from benchmarks.environment import device_slug
from benchmarks.report import RUNS_DIR, timestamped, utc_now, write_new
from pipeline.artifacts import write_json
from pipeline.native import SwinAttention, build_native
from pipeline.reference import shift_mask

# (model, stage, resolution, channels, heads, window, shift) at 224 input; stage 4 has no shift (7 ≤ window).
STAGES = [("T", 1, 56, 96, 3, 7, 3), ("T", 2, 28, 192, 6, 7, 3), ("T", 3, 14, 384, 12, 7, 3),
          ("T", 4, 7, 768, 24, 7, 0),
          ("B", 1, 56, 128, 4, 7, 3), ("B", 2, 28, 256, 8, 7, 3), ("B", 3, 14, 512, 16, 7, 3),
          ("B", 4, 7, 1024, 32, 7, 0)]

# Theoretical DRAM bandwidth (GB/s) where the driver's clock × bus width is unreliable (HBM parts report it).
PEAK_BANDWIDTH_GBS = {"H100 SXM": 3350, "H100 PCIe": 2000, "H100 NVL": 3900, "H200": 4800, "A100-SXM4-80GB": 2039,
                      "A100-SXM4-40GB": 1555, "A100-PCIE-40GB": 1555, "A100 80GB PCIe": 1935}


def peak_bandwidth_gbs(props) -> tuple[float, str]:
    for name, value in PEAK_BANDWIDTH_GBS.items():
        if name in props.name:
            return float(value), "table"
    clock_khz = getattr(props, "memory_clock_rate", 0)
    bus_bits = getattr(props, "memory_bus_width", 0)
    if clock_khz and bus_bits:  # double data rate: 2 transfers per clock
        return 2 * clock_khz * 1e3 * bus_bits / 8 / 1e9, "cudaDeviceProp"
    return float("nan"), "unknown"


def eager_attention(qkv, rel_bias, mask, *, res, window, shift, heads, scale):
    """timm-style window attention on qkv; mask [nW, N, N] or None."""
    batch, _, three_c = qkv.shape
    c, m = three_c // 3, window
    x = qkv.view(batch, res, res, three_c)
    if shift:
        x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))
    x = x.view(batch, res // m, m, res // m, m, three_c).permute(0, 1, 3, 2, 4, 5).reshape(-1, m * m, 3, heads,
                                                                                          c // heads)
    q, k, v = x.permute(2, 0, 3, 1, 4)
    attn = (q * scale) @ k.transpose(-2, -1) + rel_bias
    if mask is not None:
        nw = mask.shape[0]
        attn = (attn.view(-1, nw, heads, m * m, m * m) + mask[None, :, None]).view(-1, heads, m * m, m * m)
    out = (attn.float().softmax(-1).to(v.dtype) @ v).transpose(1, 2).reshape(batch, res // m, res // m, m, m, c)
    out = out.permute(0, 1, 3, 2, 4, 5).reshape(batch, res, res, c)
    if shift:
        out = torch.roll(out, shifts=(shift, shift), dims=(1, 2))
    return out.reshape(batch, res * res, c)


def sdpa_attention(qkv, bias_mask, *, res, window, shift, heads, scale):
    """Same layout work; attention by F.scaled_dot_product_attention with bias + mask [nW, nH, N, N]."""
    batch, _, three_c = qkv.shape
    c, m = three_c // 3, window
    x = qkv.view(batch, res, res, three_c)
    if shift:
        x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))
    x = x.view(batch, res // m, m, res // m, m, three_c).permute(0, 1, 3, 2, 4, 5).reshape(batch, -1, m * m, 3,
                                                                                          heads, c // heads)
    q, k, v = x.permute(3, 0, 1, 4, 2, 5)  # [B, nW, heads, N, hd]
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias_mask, scale=scale)
    out = out.transpose(2, 3).reshape(batch, res // m, res // m, m, m, c).permute(0, 1, 3, 2, 4, 5)
    out = out.reshape(batch, res, res, c)
    if shift:
        out = torch.roll(out, shifts=(shift, shift), dims=(1, 2))
    return out.reshape(batch, res * res, c)


def time_us(fn, warmup: int, iters: int) -> float:
    for _ in range(warmup):
        fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) * 1e3 / iters


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtypes", nargs="+", default=["fp16", "fp32"], choices=["fp16", "fp32"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8, 64])
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--iters", type=int, default=200)
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile (slow to compile)")
    parser.add_argument("--out", type=Path, help="JSON path (default build/bench/kernel_bench_<device>_<UTC "
                        "time>.json); an existing file is never replaced: the results then go to <stem>_2.json")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("kernel_bench: needs a CUDA device (torch.cuda.is_available() is False)", file=sys.stderr)
        return 2

    props = torch.cuda.get_device_properties(0)
    major, minor = torch.cuda.get_device_capability()
    lib = SwinAttention(build_native(Path(tempfile.mkdtemp(prefix="swin-bench-")), cuda_arch=f"{major}{minor}").cuda)
    peak, peak_source = peak_bandwidth_gbs(props)
    stream = torch.cuda.current_stream()
    # The same environment record as make bench, plus the roofline this benchmark reports against.
    environment = {**collect_environment(), "peak_dram_gbs": round(peak, 1), "peak_source": peak_source}
    results = []
    for dtype_name in args.dtypes:
        dtype = torch.float16 if dtype_name == "fp16" else torch.float32
        for model, stage, res, c, heads, m, s in STAGES:
            n = m * m
            rel_bias = torch.randn(heads, n, n, device="cuda", dtype=dtype)
            qkv_bias = torch.randn(3 * c, device="cuda", dtype=dtype)
            mask = torch.from_numpy(shift_mask(res, res, m, s)).to("cuda", dtype) if s else None
            bias_mask = (rel_bias[None] + (mask[:, None] if mask is not None else 0)).contiguous()
            scale = (c // heads) ** -0.5
            attrs = dict(res=res, window=m, shift=s, heads=heads, scale=scale)
            compiled = None if args.no_compile else torch.compile(eager_attention, dynamic=False)
            for batch in args.batches:
                qkv = torch.randn(batch, res * res, 3 * c, device="cuda", dtype=dtype)
                out = torch.empty(batch, res * res, c, device="cuda", dtype=dtype)

                kernel = functools.partial(lib.forward, qkv, rel_bias, qkv_bias, out, stream=stream.cuda_stream,
                                           height=res, width=res, window_size=m, shift_size=s, num_heads=heads,
                                           scale=scale)
                kernel()
                reference = eager_attention(qkv, rel_bias, mask, **attrs)
                max_error = (out.float() - reference.float()).abs().max().item()
                row = {"model": f"Swin-{model}", "stage": stage, "dtype": dtype_name, "batch": batch,
                       "tokens": res * res, "channels": c, "heads": heads, "window": m, "shift": s,
                       "max_abs_error_vs_eager": max_error}
                candidates = {"kernel": kernel,
                              "eager": functools.partial(eager_attention, qkv, rel_bias, mask, **attrs),
                              "sdpa": functools.partial(sdpa_attention, qkv, bias_mask, **attrs)}
                if compiled is not None:
                    candidates["compile"] = functools.partial(compiled, qkv, rel_bias, mask, **attrs)
                for name, fn in candidates.items():
                    row[f"{name}_us"] = time_us(fn, args.warmup, args.iters)
                for other in ("eager", "sdpa", "compile"):
                    if f"{other}_us" in row:
                        row[f"speedup_vs_{other}"] = row[f"{other}_us"] / row["kernel_us"]
                element = qkv.element_size()
                moved = (qkv.numel() + out.numel() + rel_bias.numel() + qkv_bias.numel()) * element
                row["bytes"] = moved
                row["kernel_gbs"] = moved / (row["kernel_us"] * 1e-6) / 1e9
                row["fraction_of_peak"] = row["kernel_gbs"] / peak
                results.append(row)
                print(f"{row['model']} s{stage} {dtype_name} b{batch:3d}: kernel {row['kernel_us']:8.1f} us "
                      f"({row['kernel_gbs']:6.0f} GB/s, {100 * row['fraction_of_peak']:4.1f}% of peak)  "
                      f"eager {row['eager_us']:8.1f}  sdpa {row['sdpa_us']:8.1f}"
                      + (f"  compile {row['compile_us']:8.1f}" if "compile_us" in row else "")
                      + f"  err {max_error:.1e}", flush=True)
    stem = (args.out.with_suffix("") if args.out else
            RUNS_DIR / timestamped(f"kernel_bench_{device_slug(environment)}", utc_now()))
    [path] = write_new(stem, {".json": lambda out: write_json(out, {"environment": environment, "results": results})})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
