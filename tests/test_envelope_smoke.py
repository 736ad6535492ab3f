from protocol.envelope import open_envelope, seal
from protocol.identity import Keypair
from protocol.messages import Hello


def test_sealed_hello_opens_to_the_same_message() -> None:
    key = Keypair.derive("smoke")
    msg = Hello("polnet/test", 7, b"\x11" * 32, 4001)
    env = open_envelope(seal(msg, key, "devnet"), "devnet")
    assert env.body == msg
    assert env.sender == key.public
