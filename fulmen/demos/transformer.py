"""The small Transformer language model and the WikiText-2 dataset it trains on, as in
`lightning.pytorch.demos.transformer`.

`Transformer` has the same constructor arguments, submodule names (so state dicts load either
way) and forward contract as Lightning's demo: `forward(inputs, target, mask=None)` takes two
`(batch, time)` token tensors and returns log-probabilities of shape `(batch * time, vocab_size)`.
`WikiText2` reads `<data_dir>/wikitext-2.txt`, the file Lightning's demo downloads, builds the
vocabulary in order of first appearance (one `<eos>` per line) and serves `block_size` windows as
`(inputs, targets)` shifted by one token. fulmen never downloads: a missing file is an error that
says where to get it.

    from fulmen.demos import LightningTransformer, WikiText2
    dataset = WikiText2(data_dir=Path("data"))          # needs data/wikitext-2.txt
    model = LightningTransformer(vocab_size=dataset.vocab_size)
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset

from fulmen.module import LightningModule

WIKITEXT2_URL = "https://raw.githubusercontent.com/pytorch/examples/main/word_language_model/data/wikitext-2/train.txt"
WIKITEXT2_FILE = "wikitext-2.txt"


class Transformer(nn.Module):
    """An encoder-decoder `nn.Transformer` over token embeddings, decoding to log-probabilities.

    Example:
        >>> model = Transformer(vocab_size=50, ninp=16, nhead=2, nhid=16, nlayers=1)
        >>> tokens = torch.randint(0, 50, (4, 7))
        >>> model(tokens, tokens).shape
        torch.Size([28, 50])
    """

    def __init__(
        self,
        vocab_size: int = 33278,  # WikiText-2's training vocabulary
        ninp: int = 200,
        nhead: int = 2,
        nhid: int = 200,
        nlayers: int = 2,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        self.pos_encoder = PositionalEncoding(ninp, dropout)
        self.embedding = nn.Embedding(vocab_size, ninp)
        self.transformer = nn.Transformer(
            d_model=ninp, nhead=nhead, num_encoder_layers=nlayers, num_decoder_layers=nlayers,
            dim_feedforward=nhid, dropout=dropout, batch_first=True,
        )
        self.decoder = nn.Linear(ninp, vocab_size)
        self.ninp = ninp
        self.vocab_size = vocab_size

    @staticmethod
    def generate_square_subsequent_mask(size: int) -> Tensor:
        """A `(size, size)` additive mask: 0 on and below the diagonal, -inf above (no peeking ahead)."""
        return torch.triu(torch.full((size, size), float("-inf")), diagonal=1)

    def forward(self, inputs: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        """Log-probabilities of the next token, `(batch * time, vocab_size)`; `mask` is the
        decoder's attention mask (default: causal)."""
        t = inputs.shape[1]
        if mask is None:
            mask = self.generate_square_subsequent_mask(t).to(inputs.device)
        scale = math.sqrt(self.ninp)
        src = self.pos_encoder(self.embedding(inputs) * scale)
        tgt = self.pos_encoder(self.embedding(target) * scale)
        output = self.decoder(self.transformer(src, tgt, tgt_mask=mask))
        return F.log_softmax(output, dim=-1).view(-1, self.vocab_size)


class PositionalEncoding(nn.Module):
    """Adds a sinusoidal position encoding, then dropout.

    As Lightning's demo does, one encoding vector is added to every position of a sequence: the
    one of position `time` (the sequence length). Kept so that a model trained with either
    framework computes the same outputs from the same weights. The table is built on first use
    on the input's device and is not part of the state dict (no parameters, no buffers).
    """

    def __init__(self, dim: int, dropout: float = 0.1, max_len: int = 5000) -> None:
        super().__init__()
        self.dropout = nn.Dropout(p=dropout)
        self.dim = dim
        self.max_len = max_len
        self.pe: Tensor | None = None

    def forward(self, x: Tensor) -> Tensor:
        if self.pe is None or self.pe.device != x.device:
            self.pe = self._init_pos_encoding(x.device)
        return self.dropout(x + self.pe[:, x.size(1)])

    def _init_pos_encoding(self, device: torch.device) -> Tensor:
        position = torch.arange(self.max_len, dtype=torch.float, device=device).unsqueeze(1)
        frequency = torch.exp(torch.arange(0, self.dim, 2, device=device).float() * (-math.log(10000.0) / self.dim))
        pe = torch.zeros(self.max_len, self.dim, device=device)
        pe[:, 0::2] = torch.sin(position * frequency)
        pe[:, 1::2] = torch.cos(position * frequency)
        return pe.unsqueeze(0)


class Dictionary:
    """Words ↔ ids, ids given in order of first appearance."""

    def __init__(self) -> None:
        self.word2idx: dict[str, int] = {}
        self.idx2word: list[str] = []

    def add_word(self, word: str) -> int:
        if word not in self.word2idx:
            self.word2idx[word] = len(self.idx2word)
            self.idx2word.append(word)
        return self.word2idx[word]

    def __len__(self) -> int:
        return len(self.idx2word)


def tokenize(path: Path) -> tuple[Tensor, Dictionary]:
    """The whole text of `path` as one int64 tensor of word ids (each line's words, then
    `<eos>`), and the dictionary that numbers them."""
    dictionary = Dictionary()
    ids: list[int] = []
    with open(path, encoding="utf8") as f:
        for line in f:
            ids.extend(dictionary.add_word(word) for word in [*line.split(), "<eos>"])
    return torch.tensor(ids, dtype=torch.int64), dictionary


class WikiText2(Dataset):
    """WikiText-2's training text in windows of `block_size` tokens: item i is
    `(tokens[i*b : i*b+b], tokens[i*b+1 : i*b+b+1])`.

    Example:
        >>> import tempfile
        >>> root = Path(tempfile.mkdtemp())
        >>> _ = (root / "wikitext-2.txt").write_text("the cat sat\\nthe dog sat\\n")
        >>> data = WikiText2(data_dir=root, block_size=3)
        >>> len(data), data.vocab_size, data[0][0].tolist(), data[0][1].tolist()
        (1, 5, [0, 1, 2], [1, 2, 3])
    """

    def __init__(self, data_dir: Path | str = Path("./data"), block_size: int = 35, download: bool = True) -> None:
        super().__init__()
        self.path = Path(data_dir) / WIKITEXT2_FILE
        # `download` is accepted for Lightning's signature; either way the file must be there.
        self.download(self.path)
        self.data, self.dictionary = tokenize(self.path)
        self.block_size = block_size

    @property
    def vocab_size(self) -> int:
        return len(self.dictionary)

    def __len__(self) -> int:
        # One window fewer than fit: the last window's target needs a token after it.
        return len(self.data) // self.block_size - 1

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        start = index * self.block_size
        end = start + self.block_size
        return self.data[start:end], self.data[start + 1 : end + 1]

    @staticmethod
    def download(destination: Path) -> None:
        """Check that `destination` is there (fulmen does not download; Lightning's demo would)."""
        destination = Path(destination)
        if not destination.is_file():
            raise FileNotFoundError(
                f"WikiText2 needs {destination.name} under {destination.parent}; fulmen does not download. "
                f"Received: data_dir={str(destination.parent)!r}. Fix: download it from {WIKITEXT2_URL} "
                f"to {destination}, or pass data_dir=... where {destination.name} is."
            )


class LightningTransformer(LightningModule):
    """`Transformer` trained on WikiText2 with NLL loss and SGD(lr=0.1), batch size 1."""

    def __init__(self, vocab_size: int = 33278) -> None:
        super().__init__()
        self.model = Transformer(vocab_size=vocab_size)

    def forward(self, inputs: Tensor, target: Tensor) -> Tensor:
        return self.model(inputs, target)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        inputs, target = batch
        return F.nll_loss(self(inputs, target), target.view(-1))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.model.parameters(), lr=0.1)

    def prepare_data(self) -> None:
        WikiText2(download=True)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(WikiText2())  # noqa: FM502  as Lightning's demo


__all__ = ["Dictionary", "LightningTransformer", "PositionalEncoding", "Transformer", "WikiText2", "tokenize"]
