"""The crew's model: a byte-level pre-norm transformer cut into pipeline stages.

The whole model is built from the seed on every member and each keeps only its own
stage's modules, so the initial weights do not depend on how the model is cut (a
4-stage crew and a single worker start from the same parameters, which is what lets a
verifier re-execute one stage alone). Blocks are spread as evenly as possible, the
extra ones going to the earliest stages; stage 0 also holds the embeddings, the last
stage the final norm and the (untied: the embedding lives on another member) head.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from node.compute.datasets import BYTE_VOCAB


@dataclass(frozen=True)
class ModelShape:
    blocks: int = 4
    width: int = 64
    heads: int = 4
    context: int = 64

    def __post_init__(self) -> None:
        if self.width % self.heads:
            raise ValueError(f"width {self.width} is not a multiple of heads {self.heads}")


class Block(nn.Module):
    """x + attn(ln(x)), then x + mlp(ln(x)); causal attention, GELU MLP of 4x width."""

    def __init__(self, shape: ModelShape) -> None:
        super().__init__()
        self.heads = shape.heads
        self.ln1 = nn.LayerNorm(shape.width)
        self.qkv = nn.Linear(shape.width, 3 * shape.width)
        self.proj = nn.Linear(shape.width, shape.width)
        self.ln2 = nn.LayerNorm(shape.width)
        self.up = nn.Linear(shape.width, 4 * shape.width)
        self.down = nn.Linear(4 * shape.width, shape.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(c, dim=2)
        q, k, v = (z.view(b, t, self.heads, c // self.heads).transpose(1, 2) for z in (q, k, v))
        att = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(att.transpose(1, 2).reshape(b, t, c))
        out: torch.Tensor = x + self.down(F.gelu(self.up(self.ln2(x))))
        return out


class Embed(nn.Module):
    def __init__(self, shape: ModelShape) -> None:
        super().__init__()
        self.tok = nn.Embedding(BYTE_VOCAB, shape.width)
        self.pos = nn.Embedding(shape.context, shape.width)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.tok(tokens) + self.pos(torch.arange(tokens.shape[1]))
        return out


class Head(nn.Module):
    def __init__(self, shape: ModelShape) -> None:
        super().__init__()
        self.ln = nn.LayerNorm(shape.width)
        self.out = nn.Linear(shape.width, BYTE_VOCAB)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.out(self.ln(x))
        return out


def block_split(blocks: int, stages: int) -> list[range]:
    """Which blocks each stage holds: contiguous, sizes differing by at most one."""
    if not 1 <= stages <= blocks:
        raise ValueError(f"{stages} stages for {blocks} blocks: need 1 <= stages <= blocks")
    base, extra = divmod(blocks, stages)
    out, start = [], 0
    for s in range(stages):
        n = base + (s < extra)
        out.append(range(start, start + n))
        start += n
    return out


def _parts(shape: ModelShape, stages: int, stage: int) -> list[str]:
    """The canonical names of the modules stage `stage` holds, in its Sequential's order."""
    names = ["embed"] if stage == 0 else []
    names += [f"blocks.{i}" for i in block_split(shape.blocks, stages)[stage]]
    return names + (["head"] if stage == stages - 1 else [])


def build_stage(shape: ModelShape, stages: int, stage: int, seed: int,
                base: dict[str, torch.Tensor] | None = None) -> nn.Sequential:
    """Stage `stage` of `stages`, its weights those of the whole model built from `seed`,
    or, with `base` (a whole model's weights under canonical names, as `canonical_state`
    gives them: a fine-tune's base), those. A base that does not fit the shape is a
    ValueError."""
    torch.manual_seed(seed)
    whole: dict[str, nn.Module] = {"embed": Embed(shape)}
    whole.update({f"blocks.{i}": Block(shape) for i in range(shape.blocks)})
    whole["head"] = Head(shape)
    mine = [whole[name] for name in _parts(shape, stages, stage)]
    if base is not None:
        for name, module in zip(_parts(shape, stages, stage), mine):
            prefix = name + "."
            try:
                module.load_state_dict({k[len(prefix):]: v for k, v in base.items() if k.startswith(prefix)})
            except RuntimeError as exc:
                raise ValueError(f"base weights do not fit {name} of {shape}: {exc}") from exc
    return nn.Sequential(*mine)


def canonical_state(module: nn.Sequential, shape: ModelShape, stages: int,
                    stage: int) -> dict[str, torch.Tensor]:
    """A stage's weights under the whole model's names ("embed.tok.weight",
    "blocks.2.qkv.bias", "head.out.weight"): the union over a crew's stages is the model."""
    out: dict[str, torch.Tensor] = {}
    for name, part in zip(_parts(shape, stages, stage), module):
        out.update({f"{name}.{k}": v.detach().clone() for k, v in part.state_dict().items()})
    return out
