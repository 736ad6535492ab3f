"""`polnet node links` shows the chain's committed link reports beside the live ones."""

from __future__ import annotations

from rich.console import Console

from cli.links_view import links_tables


def test_the_links_view_lists_each_committed_reporter_with_its_height_and_peers() -> None:
    doc = {"node_id": "12D3KooWabc", "measured": [], "agreed": [],
           "committed": [{"reporter": "12D3KooWreporter0001", "height": 42,
                          "peers": [{"peer": "x", "delay_ms": 3.5, "bandwidth_gbps": 1.0},
                                    {"peer": "y", "delay_ms": 1.25, "bandwidth_gbps": 0.5}]}]}
    console = Console(width=200, record=True)
    for table in links_tables(doc):
        console.print(table)
    text = console.export_text()
    assert "committed on the chain" in text
    row = next(line for line in text.splitlines() if "42" in line)
    assert "12D3KooW" in row and " 2 " in row and "1.250" in row


def test_a_node_without_a_chain_shows_an_empty_committed_table() -> None:
    assert len(links_tables({"measured": [], "agreed": []})) == 3
