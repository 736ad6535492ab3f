"""py-libp2p transport: hosts, gossipsub topics, blob streams."""
