"""examples/finetuning/finetune.py --fast as a user runs it: pretrain, save, fine-tune with
BackboneFinetuning (frozen, then unfrozen at the scheduled lr), compare with training from scratch."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import torch

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "finetuning" / "finetune.py"


def test_fast_run_freezes_then_unfreezes_the_backbone(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(SCRIPT), "--fast", "--root-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    out = proc.stdout
    # Frozen for epochs 0 and 1; from epoch 2 a second group at 0.01 * 0.02, then +10% per epoch.
    assert "epoch 0: lr head 0.01000 (backbone frozen)" in out
    assert "epoch 1: lr head 0.01000 (backbone frozen)" in out
    assert "epoch 2: lr head 0.01000, backbone 0.00020" in out
    assert "epoch 3: lr head 0.01000, backbone 0.00022" in out
    for name in ("finetune_test_acc", "scratch_test_acc"):
        value = float(re.search(rf"^{name}: (\S+)$", out, re.MULTILINE).group(1))
        assert 1 / 3 < value <= 1.0  # better than chance on 3 classes
    state = torch.load(tmp_path / "pretrained.ckpt", weights_only=True)
    assert state["state_dict"]["head.weight"].shape == (8, 32)  # the pretext task's head: 8 latent factors
    assert (tmp_path / "finetune" / "version_0" / "metrics.csv").is_file()
