"""Training throughput of the networks on whatever device torch sees (CUDA when present).

Synthetic tensors of the real shapes (no store needed, so it runs on a bare GPU
machine with only torch): cmbNNCS UNet5 at nside 128 (planes 512 x 384), UNet8
at nside 512 (2048 x 1536), the patch UNet on 128 x 128 patches; 4 input
channels (100/143/217/353 GHz), batch 12 (cmbNNCS) / 16 (patches), Adam, L1,
fp32.  Prints samples/s and seconds per CMB-ML epoch (1000 training skies);
last line one JSON object.

    python benchmarks/gpu_models.py [--steps 20]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def measure(name, nside, batch, shape, steps, device):
    import torch

    from cmbcube import networks
    torch.manual_seed(0)
    net = networks.build(name, 4, 1, nside).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    x = torch.randn(batch, 4, *shape, device=device)
    y = torch.randn(batch, 1, *shape, device=device)
    for _ in range(3):                                      # warm-up (cuDNN autotune, allocator)
        opt.zero_grad()
        torch.nn.functional.l1_loss(net(x), y).backward()
        opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.l1_loss(net(x), y).backward()
        opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() / 2 ** 30 if device.type == "cuda" else float("nan")
    return {"model": name, "nside": nside, "batch": batch, "samples_per_s": steps * batch / seconds,
            "peak_gpu_gb": round(peak, 2)}


def main(argv=None):
    import torch
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cudnn.benchmark = True
    label = torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu"
    configs = [("cmbnncs-unet5", 128, 12, (512, 384)), ("cmbnncs-unet8", 512, 12, (2048, 1536)),
               ("patch-unet", 512, 16, (128, 128))]
    if device.type == "cpu":
        configs = [("cmbnncs-unet5", 32, 12, (128, 96)), ("patch-unet", 32, 16, (8, 8))]
    rows = [measure(*c, steps=args.steps, device=device) for c in configs]
    print(f"device: {label}, torch {torch.__version__}")
    for r in rows:
        per_sky = 192 if r["model"] == "patch-unet" and r["nside"] == 512 else 1
        epoch = 1000 * per_sky / r["samples_per_s"]
        r["cmbml_epoch_s"] = round(epoch, 1)
        print(f"  {r['model']:15s} nside {r['nside']:4d} batch {r['batch']:3d}: {r['samples_per_s']:8.1f} samples/s, "
              f"CMB-ML epoch (1000 skies) {epoch:8.1f} s, peak GPU memory {r['peak_gpu_gb']} GB")
    print(json.dumps({"device": label, "results": rows}))


if __name__ == "__main__":
    main()
