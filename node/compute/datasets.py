"""Datasets as content-addressed safetensors blobs: samples (x, y) and byte-token text.

A task names its data by hash only, so the blob bytes must be the same on every node:
the generator is seeded numpy (no global RNG), digits is scikit-learn's bundled copy
(offline), the built-in text corpus is the Python documentation that ships with Python
itself (`pydoc_data.topics`), and every blob is serialised with sorted keys through
safetensors. Text is byte-level: any UTF-8 file becomes a `tokens` uint8 tensor, one
token per byte, vocabulary 256, nothing to download and no tokenizer to agree on.

Two layouts, told apart by their tensor names:
  - samples: `x` float32 [N, *input_shape] and `y` int64 [N] (images are [N, C, H, W]);
  - text: `tokens` uint8 [N] (a language model's input shape is its context, (T,)).
The held-out validation split is the spec's `val_size` last samples (tokens).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from node.compute.tensors import MAX_BLOB_BYTES, blob_id, decode_blob, encode_blob
from protocol.errors import BlobError
from protocol.pol.spec import MAX_DATASET_SAMPLES, TaskSpec

MAX_SAMPLES = 1 << 20
#: Byte-level text: one token per byte.
BYTE_VOCAB = 256
#: Largest text corpus (tokens = bytes) a spec may name.
MAX_TEXT_BYTES = MAX_DATASET_SAMPLES
CORPUS_NAME = "pydoc_data.topics"


@dataclass(frozen=True)
class Dataset:
    x: torch.Tensor  # float32 [N, *input_shape]
    y: torch.Tensor  # int64 [N]
    blob: bytes

    @property
    def digest(self) -> bytes:
        return blob_id(self.blob)

    def __len__(self) -> int:
        return int(self.y.shape[0])


@dataclass(frozen=True)
class TextDataset:
    """Byte tokens of a UTF-8 text; training and validation are windows of it."""

    tokens: torch.Tensor  # uint8 [N]
    blob: bytes

    @property
    def digest(self) -> bytes:
        return blob_id(self.blob)

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    def split(self, spec: TaskSpec, which: str) -> torch.Tensor:
        """The tokens of the training part or the held-out tail named by the spec."""
        cut = spec.train_size
        return self.tokens[:cut] if which == "train" else self.tokens[cut:]


AnyDataset = Dataset | TextDataset


def make_dataset(x: np.ndarray, y: np.ndarray) -> Dataset:
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    yt = torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64))
    return Dataset(xt, yt, encode_blob({"x": xt, "y": yt}))


def synthetic(n: int, input_shape: tuple[int, ...], num_classes: int, seed: int) -> Dataset:
    """Separable-but-noisy classes around seeded random centres (learnable, deterministic)."""
    if not 1 <= n <= MAX_SAMPLES:
        raise BlobError(f"synthetic dataset size {n} out of range")
    rng = np.random.Generator(np.random.PCG64(seed))
    dim = int(np.prod(input_shape))
    centres = rng.standard_normal((num_classes, dim))
    y = rng.integers(0, num_classes, size=n)
    x = centres[y] + 0.8 * rng.standard_normal((n, dim))
    return make_dataset(x.reshape((n, *input_shape)), y)


def digits() -> Dataset:
    """scikit-learn's 8x8 digits (1797 samples, 10 classes), features scaled to [0, 1]."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return make_dataset(d.data / 16.0, d.target)


def digit_images() -> Dataset:
    """The same digits as 1x8x8 images (N, C, H, W), for a CNN."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return make_dataset((d.data / 16.0).reshape(-1, 1, 8, 8), d.target)


def text(data: bytes) -> TextDataset:
    """Any UTF-8 text as byte tokens (refused if it is not UTF-8, empty or too large)."""
    if not 1 <= len(data) <= MAX_TEXT_BYTES:
        raise BlobError(f"a text corpus must hold 1..{MAX_TEXT_BYTES} bytes, got {len(data)}")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BlobError(f"text is not UTF-8 (byte {exc.start})") from None
    tokens = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    return TextDataset(tokens, encode_blob({"tokens": tokens}))


def corpus_text() -> bytes:
    """The built-in corpus: Python's own documentation topics, sorted by name (~465 KB).

    It ships with every CPython, so a fresh machine has real text without a download.
    Its bytes (and so its hash) follow the Python release; the blob travels with the task.
    """
    from pydoc_data.topics import topics

    return "\n\n".join(topics[k] for k in sorted(topics)).encode("utf-8")


def corpus() -> TextDataset:
    return text(corpus_text())


def unigram_bits_per_byte(tokens: torch.Tensor) -> float:
    """Entropy of the byte distribution: what a model that ignores context can reach."""
    counts = torch.bincount(tokens.long(), minlength=BYTE_VOCAB).double()
    p = counts[counts > 0] / counts.sum()
    return float(-(p * p.log2()).sum())


def load(blob: bytes, digest_: bytes, input_shape: tuple[int, ...]) -> AnyDataset:
    """Decode a fetched dataset blob, checking its hash and layout against the spec."""
    arrays = decode_blob(blob, digest_of_blob=digest_, max_bytes=MAX_BLOB_BYTES)
    if set(arrays) == {"tokens"}:
        return _text_from(arrays["tokens"], blob, input_shape)
    if set(arrays) != {"x", "y"}:
        raise BlobError("dataset blob must hold exactly 'x' and 'y', or 'tokens'")
    x, y = arrays["x"], arrays["y"]
    if x.dtype != torch.float32 or y.dtype != torch.int64 or x.ndim != len(input_shape) + 1 or y.ndim != 1:
        raise BlobError("dataset tensors have the wrong dtypes or ranks")
    if tuple(x.shape[1:]) != tuple(input_shape) or x.shape[0] != y.shape[0]:
        raise BlobError(f"dataset shape {list(x.shape)} does not match the spec's input {list(input_shape)}")
    return Dataset(x, y, blob)


def _text_from(tokens: torch.Tensor, blob: bytes, input_shape: tuple[int, ...]) -> TextDataset:
    if tokens.dtype != torch.uint8 or tokens.ndim != 1:
        raise BlobError("a text blob's 'tokens' must be one uint8 vector (byte tokens)")
    if len(input_shape) != 1:
        raise BlobError(f"a text dataset feeds a (context,) input, not {list(input_shape)}")
    if tokens.shape[0] <= input_shape[0]:
        raise BlobError(f"{tokens.shape[0]} tokens do not fill one context of {input_shape[0]} plus a target")
    return TextDataset(tokens, blob)


def load_for(spec: TaskSpec, blob: bytes) -> AnyDataset:
    """`load`, plus the checks that need the whole spec: size and text-vs-samples."""
    data = load(blob, spec.dataset_hash, tuple(spec.input_shape))
    if len(data) != spec.dataset_size:
        raise BlobError(f"dataset holds {len(data)} samples, the spec says {spec.dataset_size}")
    if isinstance(data, TextDataset) != spec.is_token_model:
        raise BlobError("a language model needs a text dataset, and a text dataset a language model")
    if isinstance(data, TextDataset) and int(data.tokens.max()) >= spec.num_classes:
        raise BlobError(
            f"token {int(data.tokens.max())} is outside the spec's vocabulary of {spec.num_classes}"
        )
    return data
