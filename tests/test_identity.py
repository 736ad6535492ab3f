"""Node identity: the node id is exactly libp2p's peer id for the same ed25519 key, so
one key serves the libp2p host and protocol signatures."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from libp2p.crypto.ed25519 import Ed25519PublicKey as Libp2pPublicKey
from libp2p.peer.id import ID

from protocol.errors import Malformed
from protocol.identity import Keypair, node_id, peer_id_bytes, public_key_from_node_id, verify

seeds = st.binary(min_size=32, max_size=32)


@settings(max_examples=50, deadline=None)
@given(seeds)
def test_node_id_equals_the_libp2p_peer_id_of_the_same_key(seed: bytes) -> None:
    key = Keypair.from_seed(seed)
    expected = ID.from_pubkey(Libp2pPublicKey.from_bytes(key.public))
    assert key.node_id == expected.to_base58()
    assert peer_id_bytes(key.public) == expected.to_bytes()


@settings(max_examples=50, deadline=None)
@given(seeds)
def test_the_public_key_is_recovered_from_the_node_id(seed: bytes) -> None:
    key = Keypair.from_seed(seed)
    assert key.node_id.startswith("12D3KooW")
    assert public_key_from_node_id(key.node_id) == key.public


@pytest.mark.parametrize(
    "text",
    [
        "",
        "0OIl",  # not in the base58 alphabet
        "12D3KooWé",
        "Qm" + "1" * 44,  # a sha256 (RSA-style) peer id, not ed25519
        "1" * 65,
    ],
)
def test_text_that_is_not_an_ed25519_peer_id_is_malformed(text: str) -> None:
    with pytest.raises(Malformed):
        public_key_from_node_id(text)


def test_derive_is_deterministic_per_label_and_distinct_across_labels() -> None:
    assert Keypair.derive("a").public == Keypair.derive("a").public
    assert Keypair.derive("a").public != Keypair.derive("b").public
    assert Keypair.from_seed(Keypair.derive("a").seed()).public == Keypair.derive("a").public


def test_a_seed_of_the_wrong_length_is_refused() -> None:
    with pytest.raises(Malformed):
        Keypair.from_seed(b"\x00" * 31)


def test_signatures_verify_only_for_their_key_message_and_length() -> None:
    alice, bob = Keypair.derive("alice"), Keypair.derive("bob")
    sig = alice.sign(b"root")
    assert verify(alice.public, sig, b"root")
    assert not verify(bob.public, sig, b"root")
    assert not verify(alice.public, sig, b"rooT")
    assert not verify(alice.public, sig[:63], b"root")
    assert not verify(alice.public[:31], sig, b"root")


def test_the_private_key_never_appears_in_repr() -> None:
    key = Keypair.derive("secret")
    assert key.seed().hex() not in repr(key)
    assert "private" not in repr(key)


def test_node_id_refuses_a_key_of_the_wrong_length() -> None:
    with pytest.raises(Malformed):
        node_id(b"\x00" * 33)
