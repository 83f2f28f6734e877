"""The small LSTM language model of `lightning.pytorch.demos.lstm`: `SimpleLSTM`, the
`SequenceSampler` that keeps each batch row on one contiguous stretch of text (so the hidden
state carries over from batch to batch), and `LightningLSTM`, which trains it on `WikiText2`
(truncated backpropagation: the hidden state is detached each step, reset each epoch).
"""

from __future__ import annotations

from collections.abc import Iterator, Sized

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Sampler

from fulmen.demos.transformer import WikiText2
from fulmen.module import LightningModule


class SimpleLSTM(nn.Module):
    """Embedding → LSTM → Linear, returning `(log_probs of (batch*time, vocab), hidden)`.

    Example:
        >>> model = SimpleLSTM(vocab_size=20, ninp=8, nhid=8, nlayers=1)
        >>> out, hidden = model(torch.randint(0, 20, (2, 5)), model.init_hidden(2))
        >>> out.shape, hidden[0].shape
        (torch.Size([10, 20]), torch.Size([1, 2, 8]))
    """

    def __init__(self, vocab_size: int = 33278, ninp: int = 512, nhid: int = 512, nlayers: int = 4, dropout: float = 0.2):
        super().__init__()
        self.vocab_size = vocab_size
        self.drop = nn.Dropout(dropout)
        self.encoder = nn.Embedding(vocab_size, ninp)
        self.rnn = nn.LSTM(ninp, nhid, nlayers, dropout=dropout, batch_first=True)
        self.decoder = nn.Linear(nhid, vocab_size)
        self.nlayers = nlayers
        self.nhid = nhid
        self.init_weights()

    def init_weights(self) -> None:
        nn.init.uniform_(self.encoder.weight, -0.1, 0.1)
        nn.init.zeros_(self.decoder.bias)
        nn.init.uniform_(self.decoder.weight, -0.1, 0.1)

    def forward(self, input: Tensor, hidden: tuple[Tensor, Tensor]) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        output, hidden = self.rnn(self.drop(self.encoder(input)), hidden)
        decoded = self.decoder(self.drop(output)).view(-1, self.vocab_size)
        return F.log_softmax(decoded, dim=1), hidden

    def init_hidden(self, batch_size: int) -> tuple[Tensor, Tensor]:
        """Zero (h, c) states of shape `(nlayers, batch_size, nhid)`, on the model's device and dtype."""
        weight = next(self.parameters())
        shape = (self.nlayers, batch_size, self.nhid)
        return weight.new_zeros(shape), weight.new_zeros(shape)


class SequenceSampler(Sampler[list[int]]):
    """Batches of indices `[i, i + chunk, i + 2*chunk, ...]` for i = 0..chunk-1, where
    chunk = len(dataset) // batch_size: row r of consecutive batches walks through chunk r in order."""

    def __init__(self, dataset: Sized, batch_size: int) -> None:
        super().__init__()
        self.dataset = dataset
        self.batch_size = batch_size
        self.chunk_size = len(dataset) // batch_size

    def __iter__(self) -> Iterator[list[int]]:
        n = len(self.dataset)
        usable = n - n % self.batch_size  # the tail that does not fill a row is left out
        for i in range(self.chunk_size):
            yield list(range(i, usable, self.chunk_size))

    def __len__(self) -> int:
        return self.chunk_size


class LightningLSTM(LightningModule):
    """`SimpleLSTM` on WikiText2, batches of 20 rows from `SequenceSampler`, SGD(lr=20)."""

    def __init__(self, vocab_size: int = 33278):
        super().__init__()
        self.model = SimpleLSTM(vocab_size=vocab_size)
        self.hidden: tuple[Tensor, Tensor] | None = None

    def on_train_epoch_end(self) -> None:
        self.hidden = None

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        input, target = batch
        if self.hidden is None:
            self.hidden = self.model.init_hidden(input.size(0))
        # Carried over from the previous batch, but not differentiated through it.
        self.hidden = (self.hidden[0].detach(), self.hidden[1].detach())
        output, self.hidden = self.model(input, self.hidden)
        loss = F.nll_loss(output, target.view(-1))
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def prepare_data(self) -> None:
        WikiText2(download=True)

    def train_dataloader(self) -> DataLoader:
        dataset = WikiText2()
        return DataLoader(dataset, batch_sampler=SequenceSampler(dataset, batch_size=20))  # noqa: FM502  the demo keeps its data beside the model, as Lightning's

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=20.0)
