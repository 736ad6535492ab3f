"""Byte-level language models: a ready spec, sampling and evaluation.

The pieces a demo or a CLI needs around a trained transformer: the spec of a small
character model on the built-in corpus (`char_transformer_spec`), text sampled from a
model state (`sample`, seeded: the same call gives the same text), and its loss in bits
per byte next to the corpus's unigram entropy (`evaluate`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from node.compute.datasets import BYTE_VOCAB, TextDataset, unigram_bits_per_byte
from node.compute.evaluate import evaluate as evaluate_state
from node.compute.ops import generator, model_forward
from node.compute.trainer import State
from protocol.errors import ConfigError
from protocol.pol.spec import (
    SPEC_VERSION,
    LossKind,
    OptimizerKind,
    OptimizerSpec,
    ReproProfile,
    TaskSpec,
    transformer_layers,
    validate_spec,
)

#: Most bytes one `sample` call writes, and longest prompt it reads.
MAX_SAMPLE_BYTES = 65_536
MAX_PROMPT_BYTES = 65_536
#: Share of the corpus held out for validation by the ready-made spec.
DEFAULT_VAL_FRACTION = 0.1


def char_transformer_spec(
    data: TextDataset,
    *,
    blocks: int = 4,
    width: int = 128,
    context: int = 128,
    heads: int = 4,
    batch_size: int = 32,
    steps: int = 2048,
    checkpoint_interval: int = 32,
    lr: float = 3e-3,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    seed: int = 1,
    threads: int = 1,
    tied: bool = True,
) -> TaskSpec:
    """A GPT-style character model on `data` (defaults: 4 blocks, d_model 128, context
    128, 4 heads, tied embeddings, AdamW), the last `val_fraction` of it held out."""
    val = max(context + 1, int(len(data) * val_fraction)) if val_fraction > 0 else 0
    spec = TaskSpec(
        SPEC_VERSION,
        (context,),
        BYTE_VOCAB,
        transformer_layers(BYTE_VOCAB, context, width, heads, blocks, tied=tied),
        LossKind.NEXT_TOKEN,
        OptimizerSpec(OptimizerKind.ADAMW, lr, beta1=0.9, beta2=0.99, weight_decay=0.01),
        batch_size,
        steps,
        checkpoint_interval,
        data.digest,
        len(data),
        seed,
        seed + 1,
        seed + 2,
        ReproProfile(threads=threads),
        val_size=val,
    )
    validate_spec(spec)
    return spec


def _bytes(prompt: str | bytes) -> bytes:
    return prompt.encode("utf-8") if isinstance(prompt, str) else prompt


def sample(
    spec: TaskSpec,
    state: State,
    prompt: str | bytes,
    n_bytes: int,
    seed: int = 0,
    temperature: float = 0.8,
    top_k: int | None = None,
) -> str:
    """Continue `prompt` by `n_bytes` bytes drawn from the model (seeded, reproducible);
    returns prompt and continuation decoded as UTF-8 (invalid bytes replaced)."""
    if not spec.is_token_model:
        raise ConfigError("sampling needs a language model (an Embedding first layer)")
    if not 0 <= n_bytes <= MAX_SAMPLE_BYTES:
        raise ConfigError(f"n_bytes must be 0..{MAX_SAMPLE_BYTES}")
    if not 0.0 < temperature <= 10.0:
        raise ConfigError("temperature must be in (0, 10]")
    raw = _bytes(prompt)
    if len(raw) > MAX_PROMPT_BYTES:
        raise ConfigError(f"prompt longer than {MAX_PROMPT_BYTES} bytes")
    context = spec.input_shape[0]
    tokens = list(raw) or [ord("\n")]
    g = generator("sample", seed)
    device = state.params[0].device
    with torch.no_grad():
        for _ in range(n_bytes):
            x = torch.tensor([tokens[-context:]], device=device)
            logits = model_forward(spec, state.params, x)[0, -1].double().cpu() / temperature
            if top_k is not None and 0 < top_k < logits.numel():
                cut = torch.topk(logits, top_k).values[-1]
                logits = logits.masked_fill(logits < cut, float("-inf"))
            probs = torch.softmax(logits, dim=-1)
            tokens.append(int(torch.multinomial(probs, 1, generator=g)))
    out = bytes(tokens if raw else tokens[1:])
    return out.decode("utf-8", errors="replace")


@dataclass(frozen=True)
class LmReport:
    val_bits_per_byte: float
    unigram_bits_per_byte: float
    accuracy: float
    tokens: int

    @property
    def below_unigram(self) -> float:
        """How far below the unigram entropy the model is (0.4 = 40% lower)."""
        return 1.0 - self.val_bits_per_byte / self.unigram_bits_per_byte


def evaluate(spec: TaskSpec, data: TextDataset, state: State, split: str | None = None) -> LmReport:
    """Loss in bits per byte on the held-out split, with the split's unigram entropy."""
    ev = evaluate_state(spec, data, state, split)
    uni = unigram_bits_per_byte(data.split(spec, ev.split))
    return LmReport(ev.bits_per_byte, uni, ev.accuracy, ev.count)
