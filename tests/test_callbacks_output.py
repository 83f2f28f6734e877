"""The callbacks that call user code or produce output: LambdaCallback (the given functions run at
their hooks, a misspelt hook is refused), BasePredictionWriter (the files written per batch, per
epoch or both, with their batch indices), RichProgressBar and RichModelSummary (what they draw,
the extra they name when rich is missing), and every python block of docs/callbacks.md runs as is.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

import fulmen as pl
from fulmen.callbacks import BasePredictionWriter, LambdaCallback, RichModelSummary, RichProgressBar
from fulmen.errors import MisconfigurationException

from helpers import SmallRegressor, quiet_trainer, sum_loader


# --- LambdaCallback ------------------------------------------------------------------------------------
def test_lambda_callback_calls_the_given_functions(tmp_path):
    calls: list[tuple] = []
    cb = LambdaCallback(on_fit_start=lambda trainer, module: calls.append(("fit_start",)),
                        on_train_epoch_end=lambda trainer, module: calls.append(("epoch_end", trainer.current_epoch)),
                        on_train_batch_end=lambda trainer, module, out, batch, i: calls.append(("batch", i)))
    quiet_trainer(tmp_path, callbacks=[cb], max_epochs=2, limit_train_batches=2).fit(SmallRegressor(), sum_loader())
    assert calls == [("fit_start",), ("batch", 0), ("batch", 1), ("epoch_end", 0), ("batch", 0), ("batch", 1),
                     ("epoch_end", 1)]
    assert cb.state_key == "LambdaCallback"
    with pytest.raises(MisconfigurationException, match="not callback hooks"):
        LambdaCallback(on_trian_start=print)


# --- BasePredictionWriter ---------------------------------------------------------------------------------------
class FileWriter(BasePredictionWriter):
    def __init__(self, out: Path, interval: str):
        super().__init__(interval)
        self.out = out

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx):
        torch.save({"prediction": prediction, "indices": batch_indices}, self.out / f"batch_{batch_idx}.pt")

    def write_on_epoch_end(self, trainer, pl_module, predictions, batch_indices):
        torch.save({"predictions": predictions, "indices": batch_indices}, self.out / "epoch.pt")


@pytest.mark.parametrize("interval", ["batch", "epoch", "batch_and_epoch"])
def test_prediction_writer_writes_files(tmp_path, interval):
    class Predictor(SmallRegressor):
        def predict_step(self, batch, batch_idx, dataloader_idx=0):
            return self(batch[0])

    model = Predictor()
    data = sum_loader(n=10, batch_size=4)
    trainer = quiet_trainer(tmp_path, callbacks=[FileWriter(tmp_path, interval)])
    assert trainer.predict(model, data, return_predictions=False) is None
    files = sorted(p.name for p in tmp_path.glob("*.pt"))
    want = {"batch": ["batch_0.pt", "batch_1.pt", "batch_2.pt"], "epoch": ["epoch.pt"]}
    assert files == sorted(want.get(interval, want["batch"] + want["epoch"]))
    x = torch.cat([b[0] for b in data])
    if interval != "epoch":
        saved = torch.load(tmp_path / "batch_2.pt", weights_only=True)
        assert saved["indices"] == [8, 9]
        torch.testing.assert_close(saved["prediction"], model(x[8:]).detach())
    if interval != "batch":
        saved = torch.load(tmp_path / "epoch.pt", weights_only=True)
        assert saved["indices"] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
        torch.testing.assert_close(torch.cat(saved["predictions"]), model(x).detach())


# --- RichProgressBar / RichModelSummary ----------------------------------------------------------------------------------
def test_rich_progress_bar_and_summary_draw(tmp_path):
    import io

    out = io.StringIO()
    console = {"file": out, "force_terminal": False, "width": 120}
    bar = RichProgressBar(leave=True, console_kwargs=console)
    summary = RichModelSummary(max_depth=1, console_kwargs=console)
    trainer = pl.Trainer(default_root_dir=tmp_path, logger=False, enable_checkpointing=False, accelerator="cpu",
                         callbacks=[bar, summary], max_epochs=1, limit_train_batches=3, limit_val_batches=1)
    trainer.fit(SmallRegressor(hidden=2), sum_loader(), sum_loader(n=4))
    text = out.getvalue()
    assert "Epoch 0" in text and "3/3" in text
    assert "Sequential" in text and "Trainable params" in text
    assert trainer.progress_bar_callback is bar


def test_rich_missing_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "rich", None)
    with pytest.raises(ModuleNotFoundError, match=r"fulmen\[rich\]"):
        RichProgressBar()
    with pytest.raises(ModuleNotFoundError, match=r"fulmen\[rich\]"):
        RichModelSummary()


# --- docs/callbacks.md ---------------------------------------------------------------------------------------------------
def test_docs_snippets_run(tmp_path, monkeypatch, capsys):
    """Every python block of docs/callbacks.md runs as is (in a scratch directory)."""
    import re

    doc = (Path(__file__).resolve().parents[1] / "docs" / "callbacks.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", doc, re.DOTALL)
    assert len(blocks) == 14
    monkeypatch.chdir(tmp_path)
    for i, code in enumerate(blocks):
        exec(compile(code, f"docs/callbacks.md block {i}", "exec"), {"__name__": f"doc_block_{i}"})
    out = capsys.readouterr().out
    assert "Training spike detected in batch 6" in out
    assert "0.25 of the weights are zero" in out
    assert "['0.pt', '1.pt', '2.pt']" in out
