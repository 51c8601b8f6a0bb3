#!/usr/bin/env python3
"""Sample quality for the bundled Fashion-MNIST model: a small classifier's test accuracy, and
FIDs computed in that classifier's feature space (its 128-d penultimate layer).

    python3 tools/eval/eval.py --samples ddim50=runs/ddim50.safetensors ddpm50=runs/ddpm50.safetensors \
        [--diffusers-ddim 500 --model assets/fashion-mnist]

Each --samples file is what `diffusion-wgpu sample ... --out X.safetensors` writes (`x0`,
[N, 1, 28, 28] in [-1, 1]). `--diffusers-ddim N` also draws N samples with diffusers' own
DDIMPipeline (50 steps, eta 0) from the same checkpoint and scores them. The baseline is the
FID between the test set and 10,000 training images. Each FID comes with a bootstrap standard
deviation (resampling the generated set with replacement), the noise two FIDs are compared by.
The classifier is trained once (seeded, 3 epochs) and cached in tools/eval/runs/.
"""
import argparse
import gzip
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file

DATA = Path("/usr/share/datasets/fashion-mnist")
HERE = Path(__file__).resolve().parent


def read_idx(path: Path, images: bool) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    if images:
        count, rows, cols = np.frombuffer(data[4:16], dtype=">u4")
        return np.frombuffer(data[16:], dtype=np.uint8).reshape(count, rows, cols)
    return np.frombuffer(data[8:], dtype=np.uint8)


def load_split(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    x = read_idx(DATA / f"{name}-images-idx3-ubyte.gz", True).astype(np.float32) / 127.5 - 1.0
    y = read_idx(DATA / f"{name}-labels-idx1-ubyte.gz", False).astype(np.int64)
    return torch.from_numpy(x).unsqueeze(1), torch.from_numpy(y)


class Classifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.fc1 = nn.Linear(64 * 7 * 7, 128)
        self.fc2 = nn.Linear(128, 10)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return F.relu(self.fc1(x.flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.features(x))


def classifier() -> Classifier:
    path = HERE / "runs" / "classifier.pt"
    model = Classifier()
    if path.exists():
        model.load_state_dict(torch.load(path))
        return model.eval()
    torch.manual_seed(0)
    x, y = load_split("train")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for epoch in range(3):
        order = torch.randperm(len(x))
        for i in range(0, len(x), 128):
            batch = order[i:i + 128]
            loss = F.cross_entropy(model(x[batch]), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        print(f"classifier epoch {epoch + 1}: loss {loss.item():.3f}")
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return model.eval()


@torch.no_grad()
def features(model: Classifier, images: torch.Tensor) -> np.ndarray:
    return torch.cat([model.features(images[i:i + 500]) for i in range(0, len(images), 500)]).double().numpy()


def fid(a: np.ndarray, b: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to two feature sets."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    # trace sqrt(cov_a cov_b) via the symmetric form sqrt(cov_a) cov_b sqrt(cov_a).
    values, vectors = np.linalg.eigh(cov_a)
    root_a = (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T
    middle = np.linalg.eigvalsh(root_a @ cov_b @ root_a)
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * np.sqrt(np.clip(middle, 0, None)).sum())


def bootstrap_std(generated: np.ndarray, reference: np.ndarray, rounds: int = 20) -> float:
    rng = np.random.default_rng(0)
    scores = [fid(generated[rng.integers(0, len(generated), len(generated))], reference) for _ in range(rounds)]
    return float(np.std(scores))


@torch.no_grad()
def diffusers_ddim_samples(model_dir: Path, count: int) -> torch.Tensor:
    from diffusers import DDIMPipeline, DDIMScheduler, UNet2DModel

    unet = UNet2DModel.from_pretrained(model_dir, low_cpu_mem_usage=False)
    scheduler = DDIMScheduler.from_pretrained(model_dir)
    pipeline = DDIMPipeline(unet=unet, scheduler=scheduler)
    generator = torch.Generator().manual_seed(1234)
    out = []
    for i in range(0, count, 50):
        images = pipeline(batch_size=min(50, count - i), generator=generator, num_inference_steps=50,
                          eta=0.0, output_type="np").images
        out.append(torch.from_numpy(images).permute(0, 3, 1, 2) * 2 - 1)
    return torch.cat(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", nargs="*", default=[], help="NAME=FILE.safetensors (x0)")
    parser.add_argument("--diffusers-ddim", type=int, default=0)
    parser.add_argument("--model", type=Path, default=HERE.parents[1] / "assets" / "fashion-mnist")
    args = parser.parse_args()
    torch.set_num_threads(2)

    model = classifier()
    test_x, test_y = load_split("t10k")
    with torch.no_grad():
        accuracy = (model(test_x).argmax(1) == test_y).float().mean().item()
    print(f"classifier test accuracy: {accuracy:.4f}")
    test_features = features(model, test_x)
    train_x, _ = load_split("train")
    subset = torch.randperm(len(train_x), generator=torch.Generator().manual_seed(0))[:10000]
    train_features = features(model, train_x[subset])
    print(f"| set | samples | FID vs test | bootstrap std |")
    print(f"|---|---|---|---|")
    print(f"| train (baseline) | 10000 | {fid(train_features, test_features):.3f} | "
          f"{bootstrap_std(train_features, test_features):.3f} |")
    sets = [(name, load_file(path)["x0"].clamp(-1, 1)) for name, path in (s.split("=", 1) for s in args.samples)]
    if args.diffusers_ddim:
        sets.append(("diffusers DDIMPipeline 50 eta 0", diffusers_ddim_samples(args.model, args.diffusers_ddim)))
    for name, images in sets:
        generated = features(model, images)
        print(f"| {name} | {len(images)} | {fid(generated, test_features):.3f} | "
              f"{bootstrap_std(generated, test_features):.3f} |")


if __name__ == "__main__":
    main()
