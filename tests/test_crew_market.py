"""The market's crew engine (node/compute/crew/market.py): four members train one crew
task through `CrewMarketCompute` and a `LocalCrewHub`, publish their proofs as blobs and
commit a record's hash; a check of any member re-executes its sampled segments from
those blobs. An honest crew commits and passes (the same way twice), a catalog cheat is
caught on its own rank only, a vanished member is silent while the others abort, and a
missing or garbage record or spec is a typed answer, never an exception."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import torch

from netsim.scenarios.market.compute import SharedBlobs
from node.compute.crew.config import crew_config
from node.compute.crew.launch import CrewAborted
from node.compute.crew.market import (
    RECORD_LIMITS,
    CrewCommitRecord,
    CrewMarketCompute,
    LocalCrewHub,
    MemberRun,
)
from node.compute.crew.pipeline import CrewConfig
from protocol.errors import ConfigError, PolnetError
from protocol.market.jobs import (
    CrewCheckJob,
    CrewCheckResult,
    CrewTrainJob,
    CrewTrainResult,
    TaskFacts,
    conforms,
)
from protocol.pol.crew_spec import MAX_CREW_FILE, parse_crew_spec
from protocol.records import decode_record

TINY = b"""
stages = 2
data_parallel = 2
epochs = 2
n_train = 16
n_val = 8
micro_batch = 2
micro_batches = 2
bits = 2
segment_steps = 2

[model]
blocks = 2
width = 16
heads = 2
context = 16
"""
STEPS, INTERVAL = 4, 2  # 2 epochs of 16 windows in batches of 2 x 2 x 2; two segments
KEYS = tuple(bytes([0x10 + i]) * 32 for i in range(4))
TASK_ID = hashlib.sha256(b"crew task").digest()
BEACON = hashlib.sha256(b"verify beacon").digest()


class MemBlobs(SharedBlobs):
    """The content-addressed store netsim's members share, and a copy of it to tamper with."""

    def copy(self) -> MemBlobs:
        other = MemBlobs()
        other.blobs = dict(self.blobs)
        return other


def facts(spec_hash: bytes, task_id: bytes = TASK_ID, steps: int = STEPS) -> TaskFacts:
    return TaskFacts(task_id, spec_hash, b"\x01" * 32, None, None, steps, INTERVAL, 0, 0)


def train_job(spec_hash: bytes, rank: int, task_id: bytes = TASK_ID) -> CrewTrainJob:
    return CrewTrainJob(task_id, spec_hash, rank, KEYS, 2, 2)


def check_job(spec_hash: bytes, rank: int, commitments: tuple[bytes, ...]) -> CrewCheckJob:
    return CrewCheckJob(TASK_ID, spec_hash, rank, KEYS, 2, 2, commitments, BEACON)


@dataclass
class Crew:
    blobs: MemBlobs
    spec_hash: bytes
    engines: list[CrewMarketCompute]
    results: list[CrewTrainResult | CrewCheckResult | None]

    @property
    def commitments(self) -> tuple[bytes, ...]:
        return tuple(r.commitment for r in self.results if isinstance(r, CrewTrainResult))

    def check(self, rank: int, by: int | None = None, commitments: tuple[bytes, ...] | None = None,
              blobs: MemBlobs | None = None) -> CrewCheckResult:
        """Member `rank` checked by the engine of member `by` (another member's by default:
        the checker's seat does not matter)."""
        engine = self.engines[(rank + 1) % 4 if by is None else by]
        if blobs is not None:
            engine = CrewMarketCompute(engine.me, blobs, engine.runner, engine.fraction)
        job = check_job(self.spec_hash, rank, self.commitments if commitments is None else commitments)
        result = engine.run(facts(self.spec_hash), job)
        conforms(job, result)
        assert isinstance(result, CrewCheckResult)
        return result


def train_crew(work: Path, cheats: dict[bytes, str] | None = None,
               vanish: dict[bytes, int] | None = None) -> Crew:
    blobs = MemBlobs()
    spec_hash = blobs.put(TINY)
    hub = LocalCrewHub(work, cheats=cheats, vanish=vanish, deadline_s=300)
    engines = [CrewMarketCompute(k, blobs, hub, fraction=1.0) for k in KEYS]  # every segment checked
    results = []
    for rank, engine in enumerate(engines):
        job = train_job(spec_hash, rank)
        result = engine.run(facts(spec_hash), job)
        conforms(job, result)
        results.append(result)
    return Crew(blobs, spec_hash, engines, results)


@pytest.fixture(scope="module")
def honest(tmp_path_factory: pytest.TempPathFactory) -> Crew:
    return train_crew(tmp_path_factory.mktemp("honest"))


# --- the task file ----------------------------------------------------------------------------


def test_a_crew_task_file_parses_from_bytes_with_one_clear_error() -> None:
    settings = parse_crew_spec(TINY)
    cfg = crew_config(settings)
    assert (cfg.stages, cfg.data_parallel, cfg.total_steps, cfg.segment_steps) == (2, 2, STEPS, INTERVAL)
    for blob, says in [(b"stages = [", "not TOML"), (b"\xff\xfe", "not UTF-8"),
                       (b"#" * (MAX_CREW_FILE + 1), "larger than"),
                       (b"stagse = 2", "unknown key(s): stagse")]:
        with pytest.raises(ConfigError) as err:
            parse_crew_spec(blob, "spec ab12")
        assert str(err.value).startswith("spec ab12: ") and says in str(err.value)


class NoRunner:
    """A runner that must not be reached: a bad spec is refused before anyone trains."""

    def train(self, task_id: bytes, cfg: CrewConfig, tokens: torch.Tensor, rank: int,
              members: tuple[bytes, ...]) -> MemberRun | None:
        raise AssertionError("a crew trained on a spec that does not fit its task")


@pytest.mark.parametrize(("spec", "steps", "says"), [
    (b"stages = [", STEPS, "not TOML"),
    (b"\xff", STEPS, "not UTF-8"),
    (TINY.replace(b"data_parallel = 2", b"data_parallel = 1").replace(b"n_train = 16", b"n_train = 8"),
     STEPS, "a crew of 2 x 1"),
    (TINY, STEPS + 1, "the task commits 5"),
    (TINY.replace(b"segment_steps = 2", b"segment_steps = 1"), STEPS, "in segments of 1"),
    (TINY.replace(b"n_train = 16", b"n_train = 80000"), 20000, "tokens"),
    (None, STEPS, "not published"),
])
def test_a_spec_that_is_bad_or_does_not_fit_the_task_aborts_train_and_fails_check(
        spec: bytes | None, steps: int, says: str) -> None:
    blobs = MemBlobs()
    spec_hash = blobs.put(spec) if spec is not None else hashlib.sha256(b"nobody has it").digest()
    engine = CrewMarketCompute(KEYS[1], blobs, NoRunner())
    job = train_job(spec_hash, 1)
    result = engine.run(facts(spec_hash, steps=steps), job)
    conforms(job, result)
    assert isinstance(result, CrewTrainResult)
    assert result.aborted.startswith("spec") and says in result.aborted, result.aborted
    assert (result.commitment, result.n_boundaries) == (b"", 0)
    check = check_job(spec_hash, 1, (b"\x00" * 32,) * 4)
    verdict = engine.run(facts(spec_hash, steps=steps), check)
    conforms(check, verdict)
    assert isinstance(verdict, CrewCheckResult)
    assert not verdict.passed and verdict.finding.startswith("spec") and says in verdict.finding


def test_a_train_job_for_another_seat_is_not_answered() -> None:
    blobs = MemBlobs()
    spec_hash = blobs.put(TINY)
    engine = CrewMarketCompute(KEYS[0], blobs, NoRunner())
    assert engine.run(facts(spec_hash), train_job(spec_hash, 1)) is None


# --- a crew through the engine ----------------------------------------------------------------


@pytest.mark.slow
def test_every_member_commits_a_record_and_every_honest_check_passes_the_same_way_twice(honest: Crew) -> None:
    for rank, result in enumerate(honest.results):
        assert isinstance(result, CrewTrainResult)
        assert result.rank == rank and not result.aborted and result.n_boundaries == 3
        record = decode_record(CrewCommitRecord, honest.blobs.get(result.commitment, 1 << 30), RECORD_LIMITS)
        assert record.rank == rank and record.task_id == TASK_ID and len(record.segments) == 2
        assert all(h in honest.blobs.blobs for seg in record.segments for h in seg)  # served to verifiers
    for rank in range(4):
        first = honest.check(rank)
        assert first.passed and first.available and first.finding == ""
        assert first.steps_executed == STEPS  # both segments (fraction 1) of 2 steps each
        assert honest.check(rank, by=rank) == first  # bit-reproducible, whoever checks, however often


@pytest.mark.slow
def test_a_check_without_a_usable_record_is_unavailable_not_an_error(honest: Crew) -> None:
    good = honest.commitments
    garbage = honest.blobs.put(b"\x93not a record")
    swapped = (good[1], good[0], good[2], good[3])  # member 1's record offered as member 0's
    for commitments in [(hashlib.sha256(b"missing").digest(), *good[1:]), (garbage, *good[1:]), swapped,
                        good[:3]]:
        result = honest.check(0, commitments=commitments)
        assert not result.passed and not result.available and result.finding.startswith("record"), result
    # a record whose segment blob nobody serves: the member does not stand behind it
    record = decode_record(CrewCommitRecord, honest.blobs.get(good[2], 1 << 30), RECORD_LIMITS)
    holes = honest.blobs.copy()
    del holes.blobs[record.segments[1][0]]
    result = honest.check(2, blobs=holes)
    assert not result.passed and not result.available and "segment not served" in result.finding


@pytest.mark.slow
def test_a_record_that_lies_about_its_run_fails_its_check(honest: Crew) -> None:
    from protocol.records import encode_record

    record = decode_record(CrewCommitRecord, honest.blobs.get(honest.commitments[3], 1 << 30), RECORD_LIMITS)
    fake = list(record.state_digests)
    fake[2] = hashlib.sha256(b"another end").digest()
    forged = honest.blobs.put(encode_record(replace(record, state_digests=tuple(fake))))
    result = honest.check(3, commitments=(*honest.commitments[:3], forged))
    assert result.available and not result.passed and "end state" in result.finding


@pytest.mark.slow
def test_a_cheating_member_fails_its_check_and_only_it(tmp_path: Path) -> None:
    crew = train_crew(tmp_path, cheats={KEYS[1]: "noisy"})
    assert all(isinstance(r, CrewTrainResult) and not r.aborted for r in crew.results)
    verdicts = [crew.check(rank) for rank in range(4)]
    assert [v.passed for v in verdicts] == [True, False, True, True], verdicts
    assert verdicts[1].available and verdicts[1].finding


@pytest.mark.slow
def test_a_vanished_member_is_silent_and_the_others_abort(tmp_path: Path) -> None:
    crew = train_crew(tmp_path, vanish={KEYS[2]: 1})
    assert crew.results[2] is None
    for rank in (0, 1, 3):
        result = crew.results[rank]
        assert isinstance(result, CrewTrainResult) and result.aborted and result.commitment == b""
        assert "member 2" in result.aborted and 0 <= result.step <= STEPS


def test_the_hub_answers_every_member_from_one_run_and_keeps_a_few(tmp_path: Path, monkeypatch:
                                                                    pytest.MonkeyPatch) -> None:
    import node.compute.crew.market as market

    calls: list[bytes] = []

    def fake_crew(cfg: CrewConfig, tokens: torch.Tensor, **kw: object) -> list[object]:
        root = kw["proof_root"]
        assert isinstance(root, Path)
        calls.append(root.name.encode())
        (root / "rank-0").mkdir(parents=True)
        if kw["vanish"] is not None:
            raise CrewAborted("member 2 exited with code 137")
        return [f"result {r}" for r in range(cfg.world)]

    monkeypatch.setattr(market, "run_local_crew", fake_crew)
    cfg = crew_config(parse_crew_spec(TINY))
    hub = LocalCrewHub(tmp_path, vanish={KEYS[2]: 1}, keep=2)
    tokens = torch.zeros(1)
    without_2 = (*KEYS[:2], b"\x99" * 32, KEYS[3])
    for t in range(3):
        run = hub.train(bytes([t]) * 32, cfg, tokens, 1, without_2)
        assert isinstance(run, MemberRun) and run.result == "result 1"
        assert run.proof_dir.parent.parent == tmp_path / (bytes([t]) * 32).hex()
        assert run.proof_dir.name == "rank-1"
    hub.train(bytes([2]) * 32, cfg, tokens, 0, without_2)
    assert len(calls) == 3 and len(hub._runs) == 2  # one run per task, the oldest forgotten
    assert not (tmp_path / (bytes([0]) * 32).hex()).exists() and (tmp_path / (bytes([2]) * 32).hex()).exists()
    assert hub.train(b"\x07" * 32, cfg, tokens, 2, KEYS) is None  # the vanished member: silence
    with pytest.raises(CrewAborted) as err:
        hub.train(b"\x07" * 32, cfg, tokens, 0, KEYS)
    assert "member 2" in str(err.value) and len(calls) == 4
    hub.train(b"\x07" * 32, cfg, tokens, 0, without_2)  # a re-placed crew of the task trains afresh
    assert len(calls) == 5
    hub.train(b"\x07" * 32, cfg, tokens, 0, without_2, attempt=1)  # the same members, placed again:
    assert len(calls) == 6 and calls[-1] != calls[-2]  # another crew, another run, its own folder
    with pytest.raises(ConfigError, match="unknown crew cheat"):
        LocalCrewHub(tmp_path, cheats={KEYS[0]: "lazy"})


@pytest.mark.slow
def test_the_result_is_the_whole_model_from_each_stages_committed_final_state(honest: Crew) -> None:
    """What a submitter gets back: one safetensors of the whole model under its own names,
    each stage read from replica 0's committed final state (the one verified), and its
    next-byte accuracy on the held-out windows; a record whose final state differs from
    what it commits gives no result."""
    from safetensors.torch import load

    engine = honest.engines[0]
    digest, accuracy = engine.final_weights(facts(honest.spec_hash), KEYS, honest.commitments, 2, 2)
    whole = load(honest.blobs.get(digest, 1 << 30))
    trained: dict[str, torch.Tensor] = {}
    for stage_result in engine.runner._runs[(TASK_ID, KEYS, 0)].results[::2]:  # type: ignore[attr-defined]
        trained.update(load(stage_result.state_blob))  # replica 0 of each stage, as the members kept it
    assert set(whole) == set(trained) and all(torch.equal(whole[k], trained[k]) for k in whole)
    assert any(k.startswith("embed.") for k in whole) and any(k.startswith("head.") for k in whole)
    assert 0.0 <= accuracy <= 1.0  # (4 steps from scratch: the model is all but untrained)
    # The assembled model is the crew's: it has the held-out loss the last stage measured.
    import torch.nn.functional as F

    from node.compute.crew.market import builtin_tokens
    from node.compute.crew.model import build_stage
    from node.compute.crew.pipeline import windows

    cfg = engine.config(facts(honest.spec_hash), check_job(honest.spec_hash, 0, honest.commitments))
    _, val = windows(builtin_tokens(), cfg)
    with torch.no_grad():
        logits = build_stage(cfg.shape, 1, 0, cfg.seed, base=whole)(val[:, :-1])
        loss = float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), val[:, 1:].reshape(-1)))
    measured = [r.val_loss for r in engine.runner._runs[(TASK_ID, KEYS, 0)].results if r.val_loss is not None]  # type: ignore[attr-defined]
    assert measured and abs(loss - measured[0]) < 1e-5
    again = engine.final_weights(facts(honest.spec_hash), KEYS, honest.commitments, 2, 2)
    assert again == (digest, accuracy)  # deterministic
    swapped = (honest.commitments[1], *honest.commitments[1:])  # stage 0 read from another's record
    with pytest.raises(PolnetError):
        engine.final_weights(facts(honest.spec_hash), KEYS, swapped, 2, 2)
