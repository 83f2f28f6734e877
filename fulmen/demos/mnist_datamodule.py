"""MNIST for demos, as in `lightning.pytorch.demos.mnist_datamodule`: the `MNIST` dataset and
`MNISTDataModule` (train/val split of the training set, test set, Lightning's loader settings).

`MNIST` reads files already on disk, in either layout Lightning's demo uses:
  * Lightning's processed files, `<root>/MNIST/complete/training.pt` and `test.pt`, each a
    `torch.save`d `(images uint8 (N, 28, 28), labels (N,))` pair;
  * torchvision's raw IDX files, `<root>/MNIST/raw/train-images-idx3-ubyte` and
    `train-labels-idx1-ubyte` (`t10k-*` for the test set), plain or `.gz`.
fulmen never downloads: when neither is there, the error says where to get them.

An item is `(image, label)`. Without `transform` it is what Lightning's own demo dataset gives: the
pixel values (0-255) as a float `(1, 28, 28)` tensor, shifted and scaled by `normalize=(mean,
std)`. With `transform` (e.g. torchvision's `ToTensor()`, which `MNISTDataModule` uses when
torchvision is installed) the image is passed as a PIL image, as torchvision's MNIST does.
"""

from __future__ import annotations

import gzip
import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, random_split

from fulmen.datamodule import LightningDataModule

_DATASETS_PATH = "./data"
PROCESSED_URL = "https://pl-public-data.s3.amazonaws.com/MNIST/processed/"


class MNIST(Dataset):
    """The MNIST training (`train=True`, 60,000 images) or test set read from `root`.

    Example:
        >>> data = MNIST("data", train=False)  # doctest: +SKIP
        >>> image, label = data[0]  # doctest: +SKIP
    """

    TRAIN_FILE_NAME = "training.pt"
    TEST_FILE_NAME = "test.pt"
    cache_folder_name = "complete"
    RAW_FILES = {
        True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
        False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
    }

    def __init__(
        self,
        root: str | Path = _DATASETS_PATH,
        train: bool = True,
        normalize: tuple | None = (0.1307, 0.3081),
        download: bool = True,
        transform: Callable | None = None,
        target_transform: Callable | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        self.root = str(root)
        self.train = train
        self.normalize = normalize
        self.transform = transform
        self.target_transform = target_transform
        # `download` is accepted for Lightning's signature; either way the files must be there.
        self.data, self.targets = self._load()

    @property
    def cached_folder_path(self) -> str:
        return str(Path(self.root, "MNIST", self.cache_folder_name))

    @property
    def raw_folder(self) -> str:
        return str(Path(self.root, "MNIST", "raw"))

    def _load(self) -> tuple[Tensor, Tensor]:
        processed = Path(self.cached_folder_path, self.TRAIN_FILE_NAME if self.train else self.TEST_FILE_NAME)
        if processed.is_file():
            data, targets = torch.load(processed, map_location="cpu", weights_only=True)
            return data, torch.as_tensor(targets)
        images, labels = (_find_raw(Path(self.raw_folder, name)) for name in self.RAW_FILES[self.train])
        if images is not None and labels is not None:
            return _read_idx(images), _read_idx(labels).long()
        split = "training" if self.train else "test"
        raise FileNotFoundError(
            f"MNIST needs its {split} set under {self.root}: {processed} (Lightning's processed file) or "
            f"{' and '.join(self.RAW_FILES[self.train])} under {self.raw_folder} (torchvision's raw files); "
            f"fulmen does not download. Received: root={self.root!r}. Fix: download {PROCESSED_URL}"
            f"{processed.name} to {processed} (or run torchvision.datasets.MNIST(root, download=True) once), "
            "or pass the root where the files are."
        )

    def __getitem__(self, idx: int) -> tuple[Any, Any]:
        target: Any = int(self.targets[idx])
        if self.transform is not None:
            from PIL import Image  # torchvision's contract: transforms receive a PIL image

            img: Any = self.transform(Image.fromarray(self.data[idx].numpy()))
        else:
            img = self.data[idx].float().unsqueeze(0)
            if self.normalize is not None and len(self.normalize) == 2:
                img = self.normalize_tensor(img, *self.normalize)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return img, target

    def __len__(self) -> int:
        return len(self.data)

    @staticmethod
    def normalize_tensor(tensor: Tensor, mean: float = 0.0, std: float = 1.0) -> Tensor:
        mean_t = torch.as_tensor(mean, dtype=tensor.dtype, device=tensor.device)
        std_t = torch.as_tensor(std, dtype=tensor.dtype, device=tensor.device)
        return tensor.sub(mean_t).div(std_t)


def _find_raw(path: Path) -> Path | None:
    """`path`, or `path.gz`, whichever exists."""
    for candidate in (path, path.with_name(path.name + ".gz")):
        if candidate.is_file():
            return candidate
    return None


def _read_idx(path: Path) -> Tensor:
    """An IDX file (MNIST's format: magic 0x0000 <type 0x08 = uint8> <ndim>, big-endian int32
    sizes, then the bytes) as a uint8 tensor of those sizes."""
    with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(
            f"{path} is not an unsigned-byte IDX file (MNIST's raw format). Received: first bytes {raw[:4]!r}. "
            "Fix: use the files torchvision.datasets.MNIST downloads, or Lightning's processed .pt files."
        )
    ndim = raw[3]
    sizes = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    body = raw[4 + 4 * ndim :]
    return torch.frombuffer(bytearray(body), dtype=torch.uint8).reshape(sizes)


class MNISTDataModule(LightningDataModule):
    """MNIST's training set split into train and `val_split` validation images (split seeded
    with 42, as Lightning's is), and its test set.

    Example:
        >>> MNISTDataModule(data_dir="data", batch_size=64).num_classes
        10
    """

    name = "mnist"

    def __init__(
        self,
        data_dir: str = _DATASETS_PATH,
        val_split: int = 5000,
        num_workers: int = 16,
        normalize: bool = False,
        seed: int = 42,
        batch_size: int = 32,
    ) -> None:
        super().__init__()
        self.data_dir = data_dir
        self.val_split = val_split
        self.num_workers = num_workers
        self.normalize = normalize
        self.seed = seed
        self.batch_size = batch_size

    @property
    def num_classes(self) -> int:
        return 10

    def prepare_data(self) -> None:
        """Check that the files are in `data_dir` (fulmen does not download them)."""
        MNIST(self.data_dir, train=True, download=True)
        MNIST(self.data_dir, train=False, download=True)

    def setup(self, stage: str) -> None:
        dataset = MNIST(self.data_dir, train=True, download=False, **self._transform_kwargs())
        train_length = len(dataset)
        # Lightning's demo seeds the split with 42 whatever `seed` says; so does this one, so that
        # both frameworks validate on the same images.
        self.dataset_train, self.dataset_val = random_split(
            dataset, [train_length - self.val_split, self.val_split], generator=torch.Generator().manual_seed(42)
        )

    def _transform_kwargs(self) -> dict[str, Any]:
        transform = self.default_transforms
        return {"transform": transform} if transform else {}

    def _loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        # Lightning pins always; pinning without an accelerator does nothing but warn, so only with CUDA.
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=shuffle, num_workers=self.num_workers,
                          drop_last=True, pin_memory=torch.cuda.is_available())

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.dataset_train, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.dataset_val, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(MNIST(self.data_dir, train=False, download=False, **self._transform_kwargs()), shuffle=False)

    @property
    def default_transforms(self) -> Callable | None:
        """torchvision's `ToTensor()` (then `Normalize(0.5, 0.5)` with `normalize=True`) when
        torchvision is installed; None otherwise (the dataset's own tensors)."""
        if importlib.util.find_spec("torchvision") is None:
            return None
        from torchvision import transforms

        if self.normalize:
            return transforms.Compose([transforms.ToTensor(), transforms.Normalize(mean=(0.5,), std=(0.5,))])
        return transforms.ToTensor()


__all__ = ["MNIST", "MNISTDataModule"]
