"""`polnet schedule` and `polnet node links`: files in and out, plots, bad arguments, and
the whole path from two real daemons' link measurements to a schedule."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from node.config import RolesConfig
from node.daemon.layout import layout_localnet
from protocol.schedule.cost import grid_of
from protocol.schedule.model import Shape
from tests.daemon_harness import start, stop, wait_ready

SCENARIOS = Path(__file__).resolve().parents[2] / "shared" / "scenarios" / "dtfm"
runner = CliRunner()


def invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stdout + result.stderr


def test_schedule_writes_the_assignment_file_in_device_order_and_a_summary(tmp_path: Path) -> None:
    out = tmp_path / "a.json"
    code, text = invoke(
        "schedule",
        "--scenario",
        str(SCENARIOS / "case1_datacenter_spot.json"),
        "--out",
        str(out),
        "--seed",
        "1",
        "--evaluations",
        "20000",
    )
    assert code == 0, text
    doc = json.loads(out.read_text())
    assert list(doc) == ["assignment"] and len(doc["assignment"]) == 64
    grid_of([tuple(x) for x in doc["assignment"]], Shape(8, 8))  # a bijection onto 8 x 8
    summary = json.loads(text.strip().splitlines()[-1])
    assert summary["shape"] == [8, 8] and summary["method"] == "ours"
    assert summary["predicted_iteration_s"] == pytest.approx(31.634, abs=0.01)


def test_schedule_plots_devices_stages_and_links_to_a_png(tmp_path: Path) -> None:
    plot = tmp_path / "p.png"
    code, text = invoke(
        "schedule",
        "--scenario",
        str(SCENARIOS / "case3_regional_geo.json"),
        "--plot",
        str(plot),
        "--evaluations",
        "2000",
        "--time-limit",
        "20",
    )
    assert code == 0, text
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 10_000


def test_the_papers_search_is_selectable(tmp_path: Path) -> None:
    code, text = invoke(
        "schedule",
        "--scenario",
        str(SCENARIOS / "case5_homogeneous_tc.json"),
        "--method",
        "gcma",
        "--evaluations",
        "30",
    )
    assert code == 0, text
    assert json.loads(text.strip().splitlines()[-1])["method"] == "gcma"


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (["schedule"], 2, "exactly one of"),
        (["schedule", "--scenario", "x.json", "--from-network"], 2, "exactly one of"),
        (["schedule", "--scenario", "x.json", "--shape", "4y2"], 2, "STAGESxDP"),
        (["schedule", "--scenario", "x.json", "--method", "annealing"], 2, "one of"),
        (["schedule", "--scenario", "x.json", "--time-limit", "0"], 2, "time-limit"),
        (["schedule", "--scenario", "/nonexistent/s.json"], 2, "scenario not found"),
    ],
)
def test_bad_schedule_arguments_fail_with_one_clear_line(args: list[str], code: int, says: str) -> None:
    got, text = invoke(*args)
    assert got == code and says in text and "Traceback" not in text


def test_a_scenario_with_a_bad_field_is_refused_naming_it_as_bad_input(tmp_path: Path) -> None:
    doc = json.loads((SCENARIOS / "case5_homogeneous_tc.json").read_text())
    doc["bandwidth_gbps"][3][5] = 0.0
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    code, text = invoke("schedule", "--scenario", str(bad))
    assert code == 2 and "bandwidth_gbps[3][5]" in text
    doc["bandwidth_gbps"][3][5] = 1.0
    doc["workload"].pop("num_layers")
    bad.write_text(json.dumps(doc))
    code, text = invoke("schedule", "--scenario", str(bad))
    assert code == 2 and "num_layers" in text
    bad.write_text("{not json")
    code, text = invoke("schedule", "--scenario", str(bad))
    assert code == 2 and "not valid JSON" in text


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.timeout(300)
def test_two_daemons_measure_their_link_and_schedule_from_the_network(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POLNET_LINKS_PERIOD_MS", "500")
    # Workers register on the ledger and advertise capacity, so the node knows both devices.
    dirs = layout_localnet(tmp_path / "net", 2, chain_id="polnet-links", roles=[RolesConfig(worker=True)] * 2)
    procs: list[subprocess.Popen[bytes]] = [start(d) for d in dirs]
    try:
        for d, p in zip(dirs, procs, strict=True):
            wait_ready(d, p, 150.0)
        deadline = time.monotonic() + 120
        doc: dict = {}
        while time.monotonic() < deadline:
            code, text = invoke("node", "links", "-d", str(dirs[0].root), "--json")
            if code == 0:
                doc = json.loads(text)
                if doc["agreed"] and all(doc["devices"]):
                    break
            time.sleep(0.5)
        assert doc.get("agreed"), doc
        assert len(doc["nodes"]) == 2 and 0 < doc["delay_ms"][0][1] < 1000
        code, text = invoke("node", "links", "-d", str(dirs[0].root))
        assert code == 0 and "agree on" in text
        out = tmp_path / "crew.json"
        # Each end's latest report decides agreement, so on a loaded box a fresh pair of
        # reports can fall outside the tolerance for a period: retry until the deadline.
        while True:
            code, text = invoke("schedule", "--from-network", "-d", str(dirs[0].root), "--shape", "2x1",
                                "--out", str(out), "--evaluations", "200")
            if code == 0 or "no link is agreed" not in text or time.monotonic() > deadline + 60:
                break
            time.sleep(0.5)
        assert code == 0, text
        assert sorted(tuple(x) for x in json.loads(out.read_text())["assignment"]) == [(0, 0), (1, 0)]
        summary = json.loads(text.strip().splitlines()[-1])
        assert summary["nodes"] == doc["nodes"] and summary["compute_modelled"] is True
    finally:
        for p in procs:
            if p.poll() is None:
                stop(p)
