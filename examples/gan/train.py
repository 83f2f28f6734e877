"""A small GAN with manual optimization: learn a 1-D Gaussian from samples.

The generator maps noise to numbers; the discriminator tells them from samples of N(4, 0.5).
Two optimizers stepped by hand in `training_step` (`automatic_optimization = False`), as in
Lightning: discriminator first (real vs. detached fake), then the generator (non-saturating loss).

    python examples/gan/train.py           # ~15 s on 2 CPU cores
    python examples/gan/train.py --fast    # a few seconds (used by the tests)
"""

from __future__ import annotations

import argparse
import sys

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

import fulmen as pl

TARGET_MEAN, TARGET_STD = 4.0, 0.5


class GAN(pl.LightningModule):
    def __init__(self, noise_dim: int = 4, hidden: int = 32, lr: float = 2e-3):
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False  # two optimizers, stepped here
        self.generator = nn.Sequential(nn.Linear(noise_dim, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, 1))
        self.discriminator = nn.Sequential(nn.Linear(1, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, 1))

    def forward(self, n: int) -> torch.Tensor:
        """`n` generated samples."""
        z = torch.randn(n, self.hparams.noise_dim, device=self.device)
        return self.generator(z)

    def training_step(self, batch, batch_idx):
        (real,) = batch
        opt_g, opt_d = self.optimizers()
        ones, zeros = torch.ones_like(real), torch.zeros_like(real)

        # discriminator: real -> 1, fake -> 0 (the fake is detached: no generator gradients here)
        fake = self(len(real))
        d_loss = F.binary_cross_entropy_with_logits(self.discriminator(real), ones) + \
            F.binary_cross_entropy_with_logits(self.discriminator(fake.detach()), zeros)
        opt_d.zero_grad()
        self.manual_backward(d_loss)
        opt_d.step()

        # generator: make the discriminator say 1 for fakes
        g_loss = F.binary_cross_entropy_with_logits(self.discriminator(fake), ones)
        opt_g.zero_grad()
        self.manual_backward(g_loss)
        opt_g.step()

        self.log_dict({"d_loss": d_loss, "g_loss": g_loss}, prog_bar=True)

    def configure_optimizers(self):
        lr, betas = self.hparams.lr, (0.5, 0.999)
        return [torch.optim.Adam(self.generator.parameters(), lr=lr, betas=betas),
                torch.optim.Adam(self.discriminator.parameters(), lr=lr, betas=betas)]


def real_data(n: int = 4096, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(TARGET_MEAN + TARGET_STD * torch.randn(n, 1, generator=g))


@torch.no_grad()
def sample_stats(model: GAN, n: int = 4096) -> tuple[float, float]:
    samples = model(n)
    return samples.mean().item(), samples.std().item()


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="a short run (few epochs, no progress bar)")
    parser.add_argument("--max-epochs", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--root-dir", default="examples/gan/runs")
    args = parser.parse_args(argv)

    pl.seed_everything(args.seed)
    model = GAN()
    start_mean, _ = sample_stats(model)
    epochs = args.max_epochs or (6 if args.fast else 30)
    trainer = pl.Trainer(
        max_epochs=epochs, accelerator="cpu", default_root_dir=args.root_dir, logger=not args.fast,
        enable_checkpointing=False, enable_progress_bar=not args.fast, enable_model_summary=not args.fast,
    )
    trainer.fit(model, DataLoader(real_data(), batch_size=64, shuffle=True))
    mean, std = sample_stats(model)
    result = {"start_mean": start_mean, "mean": mean, "std": std, "steps": trainer.global_step}
    print(f"generated mean {start_mean:.3f} -> {mean:.3f} (target {TARGET_MEAN}), std {std:.3f} "
          f"(target {TARGET_STD}), {trainer.global_step} optimizer steps")
    return result


if __name__ == "__main__":
    out = main()
    sys.exit(0 if abs(out["mean"] - TARGET_MEAN) < 0.5 else 1)
