"""fulmen.demos beyond the boring classes: the Transformer and LSTM language models, WikiText2,
MNIST and its data module, read from files the tests write (nothing is downloaded)."""

from __future__ import annotations

import gzip
import math
from pathlib import Path

import pytest
import torch
from helpers import quiet_trainer
from torch.utils.data import DataLoader

import fulmen.demos as demos
from fulmen.demos import (
    MNIST,
    IterableBoringDataModule,
    LightningLSTM,
    LightningTransformer,
    MNISTDataModule,
    Net,
    SequenceSampler,
    SimpleLSTM,
    Transformer,
    WikiText2,
)
from fulmen.demos.transformer import tokenize

TEXT = "the cat sat on the mat\n\nthe dog sat on the log\n"


def _wikitext(root: Path, text: str = TEXT) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "wikitext-2.txt").write_text(text, encoding="utf8")
    return root


def test_lightning_demos_names_are_all_exported():
    lightning_all = ["LightningLSTM", "SequenceSampler", "SimpleLSTM", "LightningTransformer", "Transformer",
                     "WikiText2", "BoringModel", "BoringDataModule", "DemoModel"]
    assert set(lightning_all) <= set(demos.__all__)
    assert all(hasattr(demos, name) for name in demos.__all__)


# ---- Transformer ----------------------------------------------------------------------------
def test_transformer_forward_returns_log_probabilities_per_token():
    torch.manual_seed(0)
    model = Transformer(vocab_size=30, ninp=16, nhead=2, nhid=32, nlayers=1, dropout=0.0)
    inputs, target = torch.randint(0, 30, (3, 7)), torch.randint(0, 30, (3, 7))
    out = model(inputs, target)
    assert out.shape == (3 * 7, 30)
    assert torch.allclose(out.exp().sum(-1), torch.ones(21), atol=1e-5)
    loss = torch.nn.functional.nll_loss(out, target.view(-1))
    assert 0.5 * math.log(30) < loss.item() < 3 * math.log(30)  # an untrained model: about log(vocab)
    mask = Transformer.generate_square_subsequent_mask(3)
    assert mask.tolist() == [[0.0, -math.inf, -math.inf], [0.0, 0.0, -math.inf], [0.0, 0.0, 0.0]]
    # With the default causal mask, a later target token cannot change an earlier prediction.
    changed = target.clone()
    changed[:, -1] = (changed[:, -1] + 1) % 30
    model.eval()
    a, b = model(inputs, target).view(3, 7, 30), model(inputs, changed).view(3, 7, 30)
    assert torch.allclose(a[:, :-1], b[:, :-1], atol=1e-5) and not torch.allclose(a[:, -1], b[:, -1])


def test_transformer_and_wikitext2_match_lightnings(tmp_path):
    transformer = pytest.importorskip("pytorch_lightning.demos.transformer")
    torch.manual_seed(0)
    theirs = transformer.Transformer(vocab_size=40, ninp=16, nhead=2, nhid=16, nlayers=1).eval()
    ours = Transformer(vocab_size=40, ninp=16, nhead=2, nhid=16, nlayers=1).eval()
    assert sorted(ours.state_dict()) == sorted(theirs.state_dict())
    ours.load_state_dict(theirs.state_dict())
    x, y = torch.randint(0, 40, (2, 9)), torch.randint(0, 40, (2, 9))
    assert torch.equal(ours(x, y), theirs(x, y))
    root = _wikitext(tmp_path)
    a, b = WikiText2(data_dir=root, block_size=4), transformer.WikiText2(data_dir=root, block_size=4, download=False)
    assert (len(a), a.vocab_size, a.dictionary.idx2word) == (len(b), b.vocab_size, b.dictionary.idx2word)
    assert all(torch.equal(p, q) for i in range(len(a)) for p, q in zip(a[i], b[i]))


def test_lightning_transformer_fit_lowers_the_loss(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _wikitext(tmp_path / "data", TEXT * 20)  # LightningTransformer reads ./data, as Lightning's does
    torch.manual_seed(0)
    vocab = WikiText2().vocab_size

    class Recorded(LightningTransformer):
        def __init__(self):
            super().__init__(vocab_size=vocab)
            # A smaller model than the demo's 200-wide one, so the test runs in a second or two.
            self.model = Transformer(vocab_size=vocab, ninp=32, nhead=2, nhid=64, nlayers=1)
            self.losses = []

        def training_step(self, batch, batch_idx):
            loss = super().training_step(batch, batch_idx)
            self.losses.append(loss.item())
            return loss

    model = Recorded()
    quiet_trainer(tmp_path, max_epochs=2).fit(model)
    assert len(WikiText2()) == 300 // 35 - 1 == 7
    assert len(model.losses) == 2 * 7
    first, last = sum(model.losses[:3]) / 3, sum(model.losses[-3:]) / 3
    assert last < 0.7 * first, (first, last)


# ---- WikiText2 -------------------------------------------------------------------------------
def test_wikitext2_vocabulary_and_windows(tmp_path):
    data = WikiText2(data_dir=str(_wikitext(tmp_path)), block_size=4)
    # Words in order of first appearance; each line (the empty one too) ends with <eos>.
    assert data.dictionary.idx2word == ["the", "cat", "sat", "on", "mat", "<eos>", "dog", "log"]
    assert data.vocab_size == 8 and data.dictionary.word2idx["dog"] == 6
    assert data.data.tolist() == [0, 1, 2, 3, 0, 4, 5, 5, 0, 6, 2, 3, 0, 7, 5]
    assert len(data) == 15 // 4 - 1 == 2
    inputs, target = data[1]
    assert (inputs.tolist(), target.tolist()) == ([0, 4, 5, 5], [4, 5, 5, 0])
    assert inputs.dtype == torch.int64
    tokens, dictionary = tokenize(tmp_path / "wikitext-2.txt")
    assert torch.equal(tokens, data.data) and len(dictionary) == 8


def test_wikitext2_without_its_file_says_where_to_get_it(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match=r"WikiText2 needs wikitext-2\.txt under .*missing; fulmen does not "
                                                r"download\. Received: data_dir='.*missing'\. Fix: download it from "
                                                r"https://raw\.githubusercontent\.com/pytorch/examples/.*/train\.txt"):
        WikiText2(data_dir=tmp_path / "missing")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"WikiText2 needs wikitext-2\.txt under data; fulmen does not download"):
        LightningTransformer(vocab_size=8).prepare_data()
    assert not (tmp_path / "data").exists()  # nothing created, nothing fetched


# ---- LSTM ------------------------------------------------------------------------------------
def test_sequence_sampler_keeps_each_row_on_its_stretch():
    batches = list(SequenceSampler(range(10), batch_size=3))
    assert batches == [[0, 3, 6], [1, 4, 7], [2, 5, 8]]  # index 9 does not fill a row
    assert len(SequenceSampler(range(10), batch_size=3)) == 3


def test_simple_lstm_and_lightning_lstm_train(tmp_path, monkeypatch):
    model = SimpleLSTM(vocab_size=12, ninp=8, nhid=8, nlayers=2)
    out, (h, c) = model(torch.randint(0, 12, (4, 5)), model.init_hidden(4))
    assert out.shape == (20, 12) and h.shape == c.shape == (2, 4, 8)
    monkeypatch.chdir(tmp_path)
    _wikitext(tmp_path / "data", TEXT * 120)  # 50 windows of 35 tokens: 20 rows of 2
    lstm = LightningLSTM(vocab_size=WikiText2().vocab_size)
    lstm.model = SimpleLSTM(vocab_size=lstm.model.vocab_size, ninp=16, nhid=16, nlayers=2)  # the demo's is 4 x 512
    trainer = quiet_trainer(tmp_path, max_epochs=1, limit_train_batches=2)
    trainer.fit(lstm)
    assert trainer.global_step == 2
    assert lstm.hidden is None  # reset at the epoch's end
    assert math.isfinite(trainer.callback_metrics["train_loss"].item())


# ---- MNIST -----------------------------------------------------------------------------------
def _images(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 28, 28), generator=g, dtype=torch.uint8), torch.arange(n) % 10


def _write_processed(root: Path, train: tuple, test: tuple) -> None:
    folder = root / "MNIST" / "complete"
    folder.mkdir(parents=True)
    torch.save(train, folder / "training.pt")
    torch.save(test, folder / "test.pt")


def _idx(tensor: torch.Tensor) -> bytes:
    header = bytes([0, 0, 0x08, tensor.dim()]) + b"".join(s.to_bytes(4, "big") for s in tensor.shape)
    return header + tensor.to(torch.uint8).contiguous().numpy().tobytes()


def test_mnist_reads_lightnings_processed_files(tmp_path):
    train, test = _images(12, 0), _images(5, 1)
    _write_processed(tmp_path, train, test)
    data = MNIST(str(tmp_path), train=True)
    assert len(data) == 12 and len(MNIST(tmp_path, train=False)) == 5
    image, label = data[3]
    assert image.shape == (1, 28, 28) and image.dtype == torch.float32 and label == 3
    # As Lightning's demo dataset: the 0-255 pixel values, normalized by (0.1307, 0.3081).
    assert torch.allclose(image[0], (train[0][3].float() - 0.1307) / 0.3081)
    assert torch.equal(MNIST(tmp_path, normalize=None)[3][0][0], train[0][3].float())
    lightning = pytest.importorskip("pytorch_lightning.demos.mnist_datamodule")
    theirs = lightning._MNIST(str(tmp_path), train=True, download=False)
    assert torch.equal(theirs[3][0], image) and theirs[3][1] == label


def test_mnist_reads_torchvisions_raw_idx_files_plain_or_gzipped(tmp_path):
    (images, labels), (test_images, test_labels) = _images(6, 2), _images(4, 3)
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    (raw / "train-images-idx3-ubyte").write_bytes(_idx(images))
    (raw / "train-labels-idx1-ubyte").write_bytes(_idx(labels))
    (raw / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(_idx(test_images)))
    (raw / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx(test_labels)))
    train, test = MNIST(tmp_path, normalize=None), MNIST(tmp_path, train=False, normalize=None)
    assert torch.equal(train.data, images) and train.targets.tolist() == labels.tolist()
    assert torch.equal(test.data, test_images) and test[2][1] == 2
    # A transform receives a PIL image, as torchvision's MNIST gives it.
    seen = MNIST(tmp_path, transform=lambda img: (type(img).__module__, img.size, img.getpixel((5, 7))))[1][0]
    assert seen == ("PIL.Image", (28, 28), int(images[1, 7, 5]))


def test_mnist_without_files_says_where_to_get_them(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"MNIST needs its training set under .*: .*MNIST/complete/training\.pt "
                                                r"\(Lightning's processed file\) or train-images-idx3-ubyte and "
                                                r"train-labels-idx1-ubyte under .*MNIST/raw.*fulmen does not download\. "
                                                r"Received: root=.*Fix: download https://pl-public-data"):
        MNIST(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"MNIST needs its test set"):
        MNIST(tmp_path, train=False)
    with pytest.raises(FileNotFoundError, match=r"fulmen does not download"):
        MNISTDataModule(data_dir=str(tmp_path)).prepare_data()
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    (raw / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x0d\x03rest")
    (raw / "train-labels-idx1-ubyte").write_bytes(_idx(torch.arange(3)))
    with pytest.raises(ValueError, match=r"is not an unsigned-byte IDX file"):
        MNIST(tmp_path)


def test_mnist_data_module_splits_and_trains(tmp_path):
    _write_processed(tmp_path, _images(20, 4), _images(8, 5))
    dm = MNISTDataModule(data_dir=str(tmp_path), val_split=6, num_workers=0, batch_size=4)
    assert (dm.num_classes, dm.name, dm.seed) == (10, "mnist", 42)
    dm.prepare_data()
    dm.setup("fit")
    assert (len(dm.dataset_train), len(dm.dataset_val)) == (14, 6)
    again = MNISTDataModule(data_dir=str(tmp_path), val_split=6, num_workers=0, batch_size=4, seed=7)
    again.setup("fit")
    assert list(again.dataset_val.indices) == list(dm.dataset_val.indices)  # the split is seeded with 42
    assert [len(dm.train_dataloader()), len(dm.val_dataloader()), len(dm.test_dataloader())] == [3, 1, 2]  # drop_last

    class Classifier(demos.BoringModel):
        def __init__(self):
            super().__init__()
            self.net = Net()

        def training_step(self, batch, batch_idx):
            images, labels = batch
            return torch.nn.functional.nll_loss(self.net(images / 255.0), labels)

        def validation_step(self, batch, batch_idx):
            pass

    trainer = quiet_trainer(tmp_path, max_epochs=1)
    trainer.fit(Classifier(), datamodule=MNISTDataModule(data_dir=str(tmp_path), val_split=6, num_workers=0, batch_size=4))
    assert trainer.global_step == 3


# ---- the other boring classes ------------------------------------------------------------------
def test_iterable_boring_data_module_and_net():
    dm = IterableBoringDataModule()
    dm.setup("fit")
    loaders = dm.train_dataloader()
    assert [len(list(loader)) for loader in loaders] == [16, 16]
    assert [len(list(loader)) for loader in dm.val_dataloader()] == [32, 32]
    dm.setup("predict")
    assert next(iter(dm.predict_dataloader()[1])).shape == (1, 4)
    assert Net()(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    assert isinstance(dm.train_dataloader()[0], DataLoader)
