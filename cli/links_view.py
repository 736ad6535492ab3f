"""Tables for `polnet node links`: what a node measured, which links are agreed, and
which reports the chain holds (CommitLinks, what crew placement reads)."""

from __future__ import annotations

from typing import Any

from rich.table import Table

#: Rows shown per table (a node measures a few dozen peers at most).
MAX_ROWS = 64


def _short(node: Any) -> str:
    text = str(node)
    return text if len(text) <= 16 else f"{text[:8]}..{text[-6:]}"


def links_tables(doc: dict[str, Any]) -> list[Table]:
    measured = Table(
        title=f"links measured by {_short(doc.get('node_id'))} ({doc.get('rounds', 0)} rounds, "
        f"{doc.get('failures', 0)} failed)"
    )
    for col in ("peer", "delay ms", "bandwidth Gbit/s", "samples", "age s"):
        measured.add_column(col)
    for r in (doc.get("measured") or [])[:MAX_ROWS]:
        measured.add_row(
            _short(r.get("peer")),
            f"{r.get('delay_ms', 0):.3f}",
            f"{r.get('bandwidth_gbps', 0):.3f}",
            str(r.get("samples")),
            f"{r.get('age_s', 0):.1f}",
        )
    agreed = Table(
        title=f"links both ends agree on ({doc.get('reporters', 0)} reporters; "
        f"{len(doc.get('disagreed') or [])} disagreeing pairs not used)"
    )
    for col in ("a", "b", "delay ms", "bandwidth Gbit/s"):
        agreed.add_column(col)
    for r in (doc.get("agreed") or [])[:MAX_ROWS]:
        agreed.add_row(
            _short(r.get("a")),
            _short(r.get("b")),
            f"{r.get('delay_ms', 0):.3f}",
            f"{r.get('bandwidth_gbps', 0):.3f}",
        )
    committed = Table(title="link reports committed on the chain (crew placement reads these)")
    for col in ("reporter", "height", "peers", "lowest delay ms"):
        committed.add_column(col)
    for c in (doc.get("committed") or [])[:MAX_ROWS]:
        peers = c.get("peers") or []
        lowest = min((p.get("delay_ms", 0) for p in peers), default=None)
        committed.add_row(_short(c.get("reporter")), str(c.get("height")), str(len(peers)),
                          "-" if lowest is None else f"{lowest:.3f}")
    return [measured, agreed, committed]
