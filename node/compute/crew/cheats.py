"""The crew attack catalog: one member of a crew cheats on its own stage.

The single-node catalog (node/compute/attacks.py) moved to a crew member. Each cheat
runs the honest worker with one hook changed (pipeline.Behaviour) and commits its real
states and messages, as a cheating operator's daemon would: a member that committed
something other than what it did is caught by its neighbours' records instead
(crosscheck.py; the boundary liar is `channels.LyingChannel`). What each one saves or
breaks:

- skipped_steps: applies every other optimizer step (half the updates).
- truncated: trains the first half of the run, then stops computing backward passes
  (zero gradients upstream, frozen weights): most of the second half's compute saved.
- frozen: never trains; forwards with its start weights (the "copied" checkpoint).
- lazy_backward: trains its own weights but sends zero gradients upstream, so the
  stages before it never learn (saves nothing; sabotage).
- noisy: adds noise to its weights after every step (poisons the delivered model).
- data_order: stage 0 embeds other samples than the schedule's (trains on other data).
- negated_gradient: puts the negation of its gradient into its stage's all-reduce
  (data parallelism only), pulling its replicas' training backwards. Putting in one
  gradient while committing another is the boundary liar again, towards a replica.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from node.compute.crew.pipeline import Behaviour, CrewConfig

#: Relative size of the noise the noisy member adds to its weights after every step.
NOISE_SCALE = 1e-3


class SkippedSteps(Behaviour):
    name = "skipped_steps"

    def skip_update(self, step: int) -> bool:
        return step % 2 == 1


class Truncated(Behaviour):
    name = "truncated"

    def __init__(self, steps: int) -> None:
        self.cut = steps // 2

    def skip_backward(self, step: int) -> bool:
        return step >= self.cut

    def skip_update(self, step: int) -> bool:
        return step >= self.cut


class Frozen(Truncated):
    name = "frozen"

    def __init__(self, steps: int) -> None:
        self.cut = 0


class LazyBackward(Behaviour):
    name = "lazy_backward"

    def boundary_grad(self, grad: torch.Tensor, step: int) -> torch.Tensor:
        return torch.zeros_like(grad)


class Noisy(Behaviour):
    name = "noisy"

    def __init__(self, seed: int) -> None:
        self.gen = torch.Generator().manual_seed(seed)

    @torch.no_grad()
    def after_step(self, module: torch.nn.Module, step: int) -> None:
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=self.gen) * NOISE_SCALE * (float(p.abs().mean()) or 1.0))


class DataOrder(Behaviour):
    name = "data_order"

    def __init__(self, n_train: int) -> None:
        self.n = n_train

    def input_ids(self, ids: torch.Tensor, step: int) -> torch.Tensor:
        return (ids + 1) % self.n


class NegatedGradient(Behaviour):
    name = "negated_gradient"

    def contribution(self, flat: torch.Tensor, step: int) -> None:
        flat.neg_()


#: name -> (the stage it makes sense on: "any", "first" or a data-parallel crew's
#: "replica"), and its builder from the crew's config and step count.
CATALOG: dict[str, tuple[str, Callable[[CrewConfig, int], Behaviour]]] = {
    "skipped_steps": ("any", lambda cfg, steps: SkippedSteps()),
    "truncated": ("any", lambda cfg, steps: Truncated(steps)),
    "frozen": ("any", lambda cfg, steps: Frozen(steps)),
    "lazy_backward": ("not-first", lambda cfg, steps: LazyBackward()),
    "noisy": ("any", lambda cfg, steps: Noisy(cfg.seed)),
    "data_order": ("first", lambda cfg, steps: DataOrder(cfg.n_train)),
    "negated_gradient": ("replica", lambda cfg, steps: NegatedGradient()),
}


def build(name: str, cfg: CrewConfig, steps: int) -> Behaviour:
    if name not in CATALOG:
        raise ValueError(f"unknown crew cheat {name!r}; known: {', '.join(CATALOG)}")
    return CATALOG[name][1](cfg, steps)
