"""Consensus driving the real ledger: equivocations are slashed exactly once, the
jailed equivocator leaves the committee at the next epoch, and the chain keeps going."""

from __future__ import annotations

from netsim import Sim
from netsim.scenarios.consensus import STAKE_UNIT, ConsensusScenario, honest_nodes, run_scenario
from protocol.chain_params import chain_preset
from protocol.ledger.primitives import share


def test_each_committed_equivocation_slashes_the_offender_once_and_jails_it() -> None:
    sc = ConsensusScenario(
        seed=1, behaviours=("equivocate",), app="ledger", epoch_length=5, duration_ms=2_000
    )
    sims: list[Sim] = []
    _, obs = run_scenario(sc, setup=sims.append)
    sim = sims[0]
    offender = sim.keys[0].public
    ppm = chain_preset("devnet").ledger.slash_equivocation_ppm
    for node in honest_nodes(sc):
        committed = obs.committed_evidence[node]
        assert committed and all(count == 1 for count in committed.values())
        expected = sc.powers[0] * STAKE_UNIT
        for _ in committed:  # one slash of the then-bonded stake per equivocation position
            expected -= share(expected, ppm)
        ledger = sim.core(node).inner.app  # type: ignore[union-attr]
        stake = ledger.state.stake(offender)
        assert stake.bonded == expected and stake.jailed
        assert offender not in {v.pubkey for v in ledger.validators()}
    # The chain kept committing after the equivocator was removed at the epoch boundary.
    assert min(obs.height_of(i) for i in honest_nodes(sc)) > 2 * sc.epoch_length


def test_ledger_state_roots_agree_under_a_split_attack_below_one_third() -> None:
    for seed in range(3):
        sc = ConsensusScenario(seed=seed, behaviours=("split",), app="ledger", duration_ms=1_000)
        _, obs = run_scenario(sc)  # the checker compares honest app hashes at every height
        assert min(obs.height_of(i) for i in honest_nodes(sc)) >= 3
