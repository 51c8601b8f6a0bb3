"""The PyTorch peer of `diffusion-wgpu bench`: times diffusers' UNet2DModel (eager, float32)
for the same config, weights and batch sizes, and prints the same fields as JSON on stdout.

    python3 benches/peer/unet_peer.py --model assets/fashion-mnist --batch 1,16 --steps 50
    python3 benches/peer/unet_peer.py --model DIR_WITH_CONFIG --random-weights --device cuda

`diffusion-wgpu bench --peer python3` runs it with the bench's own model and settings (it
writes the bundled model or the architecture's config to a temporary folder first) and prints
the ratio. Needs torch and diffusers (tools/train/requirements.txt pins the versions used).
"""

import argparse
import json
import os
import statistics
import sys
import time

import torch
import diffusers
from diffusers import DDIMScheduler, UNet2DModel


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a UNet2DModel folder (config.json ...)")
    parser.add_argument("--random-weights", action="store_true", help="only the config is read")
    parser.add_argument("--batch", default="1,16", help="batch sizes, comma separated")
    parser.add_argument("--repeats", type=int, default=5, help="timed forwards per batch")
    parser.add_argument("--steps", type=int, default=0, help="also time a DDIM run (eta 0)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch CPU threads")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.random_weights:
        torch.manual_seed(0)
        model = UNet2DModel.from_config(UNet2DModel.load_config(args.model))
    else:
        model = UNet2DModel.from_pretrained(args.model)
    model = model.to(device=device, dtype=torch.float32).eval()
    config = model.config
    size = config.sample_size if isinstance(config.sample_size, int) else config.sample_size[0]
    scheduler_path = os.path.join(args.model, "scheduler_config.json")
    if os.path.exists(scheduler_path):
        scheduler = DDIMScheduler.from_pretrained(args.model)
    else:
        scheduler = DDIMScheduler()

    batches = []
    for batch in (int(b) for b in args.batch.split(",")):
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(batch, config.in_channels, size, size, generator=generator).to(device)
        t = torch.full((batch,), 500, dtype=torch.long, device=device)
        times = []
        with torch.no_grad():
            for i in range(args.repeats + 1):
                synchronize(device)
                start = time.perf_counter()
                model(x, t).sample
                synchronize(device)
                if i > 0:  # the first is a warm-up
                    times.append(time.perf_counter() - start)
        entry = {"batch": batch, "forward_ms": statistics.median(times) * 1e3}
        if args.steps > 0:
            scheduler.set_timesteps(args.steps)
            sample = x.clone()
            with torch.no_grad():
                synchronize(device)
                start = time.perf_counter()
                for step in scheduler.timesteps:
                    eps = model(sample, step.to(device)).sample
                    sample = scheduler.step(eps, step, sample, eta=0.0).prev_sample
                synchronize(device)
            seconds = time.perf_counter() - start
            entry["run"] = {
                "steps": args.steps,
                "seconds": seconds,
                "step_ms": seconds / args.steps * 1e3,
                "images_per_second": batch / seconds,
            }
        batches.append(entry)
        print(f"peer: batch {batch}: {entry['forward_ms']:.2f} ms", file=sys.stderr)

    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    json.dump(
        {
            "framework": f"torch {torch.__version__}, diffusers {diffusers.__version__}, eager float32",
            "device": device_name,
            "threads": torch.get_num_threads(),
            "batches": batches,
        },
        sys.stdout,
    )
    print()


if __name__ == "__main__":
    main()
