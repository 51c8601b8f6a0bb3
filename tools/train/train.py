#!/usr/bin/env python3
"""Train a small diffusers UNet2DModel DDPM on Fashion-MNIST, on the CPU, resumably.

Data: Debian's package `dataset-fashion-mnist` (MIT licence), IDX files under
/usr/share/datasets/fashion-mnist/. Images are 28x28 grayscale, scaled to [-1, 1].

    python3 tools/train/train.py --run tools/train/runs/fmnist --steps 6000

Every --checkpoint-every steps it writes RUN/checkpoint.pt (model, EMA, optimizer, step, RNG
states, loss log) and exports the EMA weights as a diffusers folder RUN/export/ (config.json,
diffusion_pytorch_model.safetensors, scheduler_config.json). Rerunning the same command resumes
from the checkpoint. --time-limit stops cleanly (with a checkpoint) after that many minutes.
"""
import argparse
import gzip
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, UNet2DModel

DATA = Path("/usr/share/datasets/fashion-mnist")

# The architecture: 28x28x1, three levels (28, 14, 7), attention at 14x14, about 1.2M
# parameters. Sized so a 4x4 grid at 50 DDIM steps is cheap enough for a software GPU.
UNET_CONFIG = dict(
    sample_size=28,
    in_channels=1,
    out_channels=1,
    block_out_channels=(32, 64, 64),
    layers_per_block=1,
    down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    attention_head_dim=32,
    norm_num_groups=8,
    flip_sin_to_cos=True,
    freq_shift=0,
)
SCHEDULER_CONFIG = dict(
    num_train_timesteps=1000,
    beta_schedule="linear",
    beta_start=0.0001,
    beta_end=0.02,
    prediction_type="epsilon",
    clip_sample=True,
    variance_type="fixed_small",
)


def read_idx_images(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic, count, rows, cols = np.frombuffer(data[:16], dtype=">u4")
    assert magic == 2051, f"{path}: not an IDX image file"
    return np.frombuffer(data[16:], dtype=np.uint8).reshape(count, rows, cols)


def load_training_images() -> torch.Tensor:
    images = read_idx_images(DATA / "train-images-idx3-ubyte.gz")
    return torch.from_numpy(images.astype(np.float32) / 127.5 - 1.0).unsqueeze(1)


def export(model: UNet2DModel, folder: Path) -> None:
    model.save_pretrained(folder, safe_serialization=True)
    DDPMScheduler(**SCHEDULER_CONFIG).save_config(folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="run folder (checkpoint, export)")
    parser.add_argument("--steps", type=int, default=6000, help="total optimizer steps")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--ema", type=float, default=0.999)
    parser.add_argument("--checkpoint-every", type=int, default=250)
    parser.add_argument("--time-limit", type=float, default=None, help="minutes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--init-from", type=Path, default=None,
                        help="start a new run from an exported diffusers folder (its EMA weights)")
    args = parser.parse_args()

    torch.set_num_threads(2)
    args.run.mkdir(parents=True, exist_ok=True)
    checkpoint_path = args.run / "checkpoint.pt"
    images = load_training_images()

    torch.manual_seed(args.seed)
    model = UNet2DModel(**UNET_CONFIG)
    ema = UNet2DModel(**UNET_CONFIG)
    ema.load_state_dict(model.state_dict())
    ema.requires_grad_(False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    scheduler = DDPMScheduler(**SCHEDULER_CONFIG)
    generator = torch.Generator().manual_seed(args.seed)
    step, losses, seconds = 0, [], 0.0
    if args.init_from is not None and not checkpoint_path.exists():
        start = UNet2DModel.from_pretrained(args.init_from, low_cpu_mem_usage=False)
        model.load_state_dict(start.state_dict())
        ema.load_state_dict(start.state_dict())
        print(f"starting from the weights in {args.init_from}")
    if checkpoint_path.exists():
        state = torch.load(checkpoint_path, weights_only=False)
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        step, losses, seconds = state["step"], state["losses"], state["seconds"]
        print(f"resumed at step {step} ({seconds / 60:.1f} min trained so far)")
    parameters = sum(p.numel() for p in model.parameters())
    print(f"{parameters} parameters, {len(images)} training images, batch {args.batch}")

    def save() -> None:
        torch.save(
            dict(model=model.state_dict(), ema=ema.state_dict(), optimizer=optimizer.state_dict(),
                 generator=generator.get_state(), step=step, losses=losses, seconds=seconds,
                 args=vars(args) | {"run": str(args.run)}),
            checkpoint_path,
        )
        export(ema, args.run / "export")
        (args.run / "losses.json").write_text(json.dumps(losses))
        print(f"checkpoint at step {step}")

    started = time.time()
    model.train()
    while step < args.steps:
        tick = time.time()
        index = torch.randint(0, len(images), (args.batch,), generator=generator)
        x0 = images[index]
        noise = torch.randn(x0.shape, generator=generator)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (args.batch,), generator=generator)
        noisy = scheduler.add_noise(x0, noise, t)
        loss = F.mse_loss(model(noisy, t).sample, noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        # Linear warmup, then cosine decay to 10% of the peak rate.
        progress = min(1.0, step / max(1, args.steps))
        rate = args.lr * min(1.0, (step + 1) / args.warmup) * (0.55 + 0.45 * math.cos(math.pi * progress))
        for group in optimizer.param_groups:
            group["lr"] = rate
        optimizer.step()
        with torch.no_grad():
            decay = min(args.ema, (1 + step) / (10 + step))
            for e, p in zip(ema.parameters(), model.parameters()):
                e.mul_(decay).add_(p, alpha=1 - decay)
        step += 1
        seconds += time.time() - tick
        losses.append(round(loss.item(), 5))
        if step % 50 == 0:
            recent = sum(losses[-50:]) / 50
            print(f"step {step}: loss {recent:.4f}, {seconds / step:.2f} s/step")
        out_of_time = args.time_limit is not None and time.time() - started > args.time_limit * 60
        if step % args.checkpoint_every == 0 or step == args.steps or out_of_time:
            save()
        if out_of_time:
            print("time limit reached; rerun the same command to continue")
            break


if __name__ == "__main__":
    main()
