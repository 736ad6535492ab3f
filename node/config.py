"""The node's TOML configuration: typed sections, validated once, with messages an
operator can act on.

A config is read at start and never re-read: every value a running daemon uses went
through `load_config`, so a typo fails loudly before the node touches the network
instead of silently falling back to a default. Unknown keys are errors (with a
suggestion), because a misspelt `bootstrap` that is ignored produces a node that runs
alone and looks healthy.

Environment variables `POLNET_<SECTION>_<KEY>` (e.g. `POLNET_NETWORK_LISTEN_PORT=4002`)
override the file, so a swarm or a container can vary one value without templating
files. Top-level keys use `POLNET_<KEY>` (e.g. `POLNET_CHAIN_ID`).
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from protocol.envelope import MAX_CHAIN_ID_LEN
from protocol.errors import ConfigError
from protocol.market.adversaries import ADVERSARY_ROLES
from protocol.schedule.links import MAX_LINK_TTL_MS
from protocol.sealing import MAX_GENERATION

ENV_PREFIX = "POLNET_"
#: A config file is a page of settings; anything larger is not one.
MAX_CONFIG_BYTES = 64 * 1024
#: Bootstrap lists longer than this are a mistake (or a config generated wrongly).
MAX_BOOTSTRAP_PEERS = 64
#: Connections discovery dials towards (node/transport/discovery.py), at most.
MAX_TARGET_PEERS = 128
MAX_COMPUTE_THREADS = 256
MAX_BLOCK_INTERVAL_MS = 600_000
LOG_LEVELS = ("debug", "info", "warning", "error")
DEVICES = ("auto", "cpu", "cuda", "mps")
#: Attacks of node/compute's catalog a demo worker may train with (named here so that
#: reading a config does not import torch; a test pins them to the catalog).
CHEATS = ("skipped_steps", "truncated", "noisy_weights", "copied_checkpoints", "interpolated", "data_order")
#: Cheats on the dispute game itself (they train like skipped_steps, then play badly).
BISECTION_CHEATS = ("bisect_inconsistent", "bisect_silent")
#: Cheats of node/compute/crew/cheats.py a demo crew member may train with (a test pins
#: them to the catalog).
CREW_CHEATS = ("skipped_steps", "truncated", "frozen", "lazy_backward", "noisy", "data_order",
               "negated_gradient")
#: Hostile roles a demo node may run (protocol.market.adversaries).
ADVERSARIES = ADVERSARY_ROLES  # one home: the roles both shells run


def _port(name: str, value: int) -> None:
    if not 0 <= value <= 65535:
        raise ConfigError(f"{name} must be a port in 0..65535 (0 = any free port), got {value}")


def _host(name: str, value: str) -> None:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise ConfigError(f"{name} must be an IP address such as 0.0.0.0, got {value!r}") from None


def _bootstrap_addr(name: str, value: str) -> None:
    # Shape check only: /ip4|ip6|dns4|dns6/<host>/tcp/<port>/p2p/<peer id>. The transport
    # parses it for real; this catches the usual paste errors with a readable message.
    parts = value.split("/")
    ok = (
        len(parts) == 7
        and parts[0] == ""
        and parts[1] in ("ip4", "ip6", "dns4", "dns6", "dns")
        and parts[3] == "tcp"
        and parts[4].isdigit()
        and 0 < int(parts[4]) <= 65535
        and parts[5] == "p2p"
        and len(parts[6]) > 10
    )
    if not ok:
        raise ConfigError(f"{name}: {value!r} is not a peer address; expected /ip4/HOST/tcp/PORT/p2p/PEER_ID")


@dataclass(frozen=True, slots=True)
class NetworkConfig:
    listen_host: str = "0.0.0.0"
    listen_port: int = 4001
    bootstrap: tuple[str, ...] = ()
    #: Peer discovery keeps dialing peers it learns of until it has this many
    #: connections (one bootstrap address is enough to find the rest).
    target_peers: int = 8
    #: The IP other members of a crew reach this node's crew store at, when it is a crew's
    #: rank 0 (node/daemon/crews.py). Empty: the listen host, or loopback when it is 0.0.0.0.
    crew_host: str = ""

    def validate(self) -> None:
        _host("[network] listen_host", self.listen_host)
        if self.crew_host:
            _host("[network] crew_host", self.crew_host)
        _port("[network] listen_port", self.listen_port)
        if not 1 <= self.target_peers <= MAX_TARGET_PEERS:
            n = self.target_peers
            raise ConfigError(f"[network] target_peers must be 1..{MAX_TARGET_PEERS}, got {n}")
        if len(self.bootstrap) > MAX_BOOTSTRAP_PEERS:
            n = len(self.bootstrap)
            raise ConfigError(f"[network] bootstrap lists {n} peers, at most {MAX_BOOTSTRAP_PEERS}")
        for addr in self.bootstrap:
            _bootstrap_addr("[network] bootstrap", addr)


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    """Prometheus endpoint. Loopback by default: exposing it is the operator's choice."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 9464

    def validate(self) -> None:
        _host("[metrics] host", self.host)
        _port("[metrics] port", self.port)


@dataclass(frozen=True, slots=True)
class AdminConfig:
    """Local JSON endpoint for the CLI (status, tx submission). Always bound to
    127.0.0.1: it accepts transactions, so it is never offered to the network."""

    port: int = 9465

    def validate(self) -> None:
        _port("[admin] port", self.port)


@dataclass(frozen=True, slots=True)
class ComputeConfig:
    threads: int = 1
    device: str = "auto"

    def validate(self) -> None:
        if not 1 <= self.threads <= MAX_COMPUTE_THREADS:
            raise ConfigError(f"[compute] threads must be in 1..{MAX_COMPUTE_THREADS}, got {self.threads}")
        if self.device not in DEVICES:
            raise ConfigError(f"[compute] device must be one of {', '.join(DEVICES)}, got {self.device!r}")


@dataclass(frozen=True, slots=True)
class RolesConfig:
    """Which role machines this node runs; election still decides when they act."""

    validator: bool = True
    worker: bool = False
    verifier: bool = False
    whistleblower: bool = False
    #: What a worker bonds and asks per GFLOP when it registers on the ledger.
    worker_stake: int = 200_000
    worker_price: int = 60  # twice the devnet floor (MarketParams.min_price_per_gflop)
    #: Demo and test knob: a worker that trains with this attack of node/compute's catalog
    #: (it will be caught and slashed). Empty: honest.
    cheat: str = ""
    #: Demo and test knob: as a crew member, train with this cheat of
    #: node/compute/crew/cheats.py (it will be caught and slashed). Empty: honest.
    crew_cheat: str = ""
    #: Demo and test knob: a hostile role (a "lazy_verifier" worker accepts without
    #: checking; a "false_challenger" challenges every ACCEPT unchecked; a "bad_wrapper"
    #: submitter wraps its private tasks' keys wrongly to verifiers and watchers). Empty: honest.
    adversary: str = ""
    #: Which generation of X25519 key (derived from the node key) this node publishes for
    #: private tasks; bump it to rotate (older generations still open older wraps).
    enc_generation: int = 0

    def validate(self) -> None:
        if not 0 <= self.enc_generation <= MAX_GENERATION:
            raise ConfigError(f"[roles] enc_generation must be in 0..{MAX_GENERATION}, "
                              f"got {self.enc_generation}")
        if not 0 < self.worker_stake < 2**63:
            raise ConfigError(f"[roles] worker_stake must be a positive integer, got {self.worker_stake}")
        if not 0 < self.worker_price < 2**32:
            raise ConfigError(f"[roles] worker_price must be a positive integer, got {self.worker_price}")
        if self.cheat and self.cheat not in (*CHEATS, *BISECTION_CHEATS):
            names = ", ".join((*CHEATS, *BISECTION_CHEATS))
            raise ConfigError(f"[roles] cheat must be empty or one of {names}, got {self.cheat!r}")
        if self.crew_cheat and self.crew_cheat not in CREW_CHEATS:
            raise ConfigError(f"[roles] crew_cheat must be empty or one of {', '.join(CREW_CHEATS)}, "
                              f"got {self.crew_cheat!r}")
        if self.adversary and self.adversary not in ADVERSARIES:
            names = ", ".join(ADVERSARIES)
            raise ConfigError(f"[roles] adversary must be empty or one of {names}, got {self.adversary!r}")


@dataclass(frozen=True, slots=True)
class ChainConfig:
    """How this node paces the chain. With several validators the next proposer
    proposes as soon as a block commits; the interval is the pause before a new
    height, which keeps a one-node devnet from spinning out empty blocks."""

    block_interval_ms: int = 1000

    def validate(self) -> None:
        if not 0 <= self.block_interval_ms <= MAX_BLOCK_INTERVAL_MS:
            raise ConfigError(f"[chain] block_interval_ms must be in 0..{MAX_BLOCK_INTERVAL_MS}")


#: Bounds of the link-measurement service (node/daemon/links.py).
MAX_LINK_PERIOD_MS = 3_600_000
MAX_LINK_PEERS_PER_PERIOD = 16
MAX_LINK_PINGS = 16


@dataclass(frozen=True, slots=True)
class LinksConfig:
    """Link measurement for the crew scheduler: every `period_ms` the node pings
    `peers_per_period` peers `pings` times and times one small blob transfer from
    each, then gossips its reports (believed for `ttl_ms`)."""

    enabled: bool = True
    period_ms: int = 10_000
    peers_per_period: int = 3
    pings: int = 3
    ttl_ms: int = 300_000

    def validate(self) -> None:
        if not 100 <= self.period_ms <= MAX_LINK_PERIOD_MS:
            raise ConfigError(f"[links] period_ms must be in 100..{MAX_LINK_PERIOD_MS}, got {self.period_ms}")
        if not 1 <= self.peers_per_period <= MAX_LINK_PEERS_PER_PERIOD:
            raise ConfigError(f"[links] peers_per_period must be in 1..{MAX_LINK_PEERS_PER_PERIOD}")
        if not 1 <= self.pings <= MAX_LINK_PINGS:
            raise ConfigError(f"[links] pings must be in 1..{MAX_LINK_PINGS}, got {self.pings}")
        if not self.period_ms <= self.ttl_ms <= MAX_LINK_TTL_MS:
            raise ConfigError(f"[links] ttl_ms must be in period_ms..{MAX_LINK_TTL_MS}, got {self.ttl_ms}")


@dataclass(frozen=True, slots=True)
class LogConfig:
    level: str = "info"
    json: bool = False

    def validate(self) -> None:
        if self.level not in LOG_LEVELS:
            raise ConfigError(f"[log] level must be one of {', '.join(LOG_LEVELS)}, got {self.level!r}")


@dataclass(frozen=True, slots=True)
class NodeConfig:
    chain_id: str = "polnet-devnet"
    network: NetworkConfig = field(default_factory=NetworkConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    admin: AdminConfig = field(default_factory=AdminConfig)
    compute: ComputeConfig = field(default_factory=ComputeConfig)
    roles: RolesConfig = field(default_factory=RolesConfig)
    chain: ChainConfig = field(default_factory=ChainConfig)
    log: LogConfig = field(default_factory=LogConfig)
    links: LinksConfig = field(default_factory=LinksConfig)

    def validate(self) -> None:
        if not 0 < len(self.chain_id.encode("utf-8")) <= MAX_CHAIN_ID_LEN:
            raise ConfigError(f"chain_id must be 1..{MAX_CHAIN_ID_LEN} bytes, got {self.chain_id!r}")
        for section in _SECTIONS:
            getattr(self, section).validate()


_SECTIONS: dict[str, type[Any]] = {
    "network": NetworkConfig,
    "metrics": MetricsConfig,
    "admin": AdminConfig,
    "compute": ComputeConfig,
    "roles": RolesConfig,
    "chain": ChainConfig,
    "log": LogConfig,
    "links": LinksConfig,
}
_TOP_LEVEL = ("chain_id",)


# --- parsing -----------------------------------------------------------------------------


def _field_types(cls: type[Any]) -> dict[str, Any]:
    return {f.name: f.type for f in dataclasses.fields(cls)}


def _unknown(where: str, key: str, known: list[str]) -> ConfigError:
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(sorted(known))}"
    return ConfigError(f"unknown key {key!r} in {where}{hint}")


def _coerce(where: str, type_name: str, value: Any) -> Any:
    """Check a TOML value against the field's declared type (bool is not an int here)."""
    if type_name == "int" and type(value) is int:
        return value
    if type_name == "bool" and type(value) is bool:
        return value
    if type_name == "str" and type(value) is str:
        return value
    if type_name == "tuple[str, ...]" and type(value) is list and all(type(v) is str for v in value):
        return tuple(value)
    names = {"int": "an integer", "bool": "true or false", "str": "a string"}
    expected = names.get(type_name, "a list of strings")
    raise ConfigError(f"{where} must be {expected}, got {value!r}")


def _parse_env(where: str, type_name: str, text: str) -> Any:
    """Environment values are strings; turn them into the field's type or say why not."""
    if type_name == "int":
        try:
            return int(text)
        except ValueError:
            raise ConfigError(f"{where} must be an integer, got {text!r}") from None
    if type_name == "bool":
        low = text.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{where} must be true or false, got {text!r}")
    if type_name == "tuple[str, ...]":
        return tuple(p.strip() for p in text.split(",") if p.strip())
    return text


def _build_section(name: str, cls: type[Any], table: Any, env: Mapping[str, str]) -> Any:
    if not isinstance(table, dict):
        raise ConfigError(f"[{name}] must be a table, got {table!r}")
    types = _field_types(cls)
    for key in table:
        if key not in types:
            raise _unknown(f"[{name}]", key, list(types))
    values: dict[str, Any] = {}
    for key, type_name in types.items():
        env_name = f"{ENV_PREFIX}{name.upper()}_{key.upper()}"
        if env_name in env:
            values[key] = _parse_env(f"{env_name} ([{name}] {key})", type_name, env[env_name])
        elif key in table:
            values[key] = _coerce(f"[{name}] {key}", type_name, table[key])
    return cls(**values)


def config_from_dict(doc: Mapping[str, Any], env: Mapping[str, str] | None = None) -> NodeConfig:
    """Build and validate a config from parsed TOML plus environment overrides."""
    env = env or {}
    for key in doc:
        if key not in _SECTIONS and key not in _TOP_LEVEL:
            raise _unknown("the config", key, [*_SECTIONS, *_TOP_LEVEL])
    kwargs: dict[str, Any] = {}
    chain_env = f"{ENV_PREFIX}CHAIN_ID"
    if chain_env in env:
        kwargs["chain_id"] = env[chain_env]
    elif "chain_id" in doc:
        kwargs["chain_id"] = _coerce("chain_id", "str", doc["chain_id"])
    for name, cls in _SECTIONS.items():
        kwargs[name] = _build_section(name, cls, doc.get(name, {}), env)
    cfg = NodeConfig(**kwargs)
    cfg.validate()
    return cfg


def load_config(path: Path, env: Mapping[str, str] | None = None) -> NodeConfig:
    """Read, parse and validate a config file; every failure is a ConfigError naming it."""
    try:
        size = path.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise ConfigError(f"{path}: {size} bytes is too large for a config file (max {MAX_CONFIG_BYTES})")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found (run `polnet init` first)") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, expected a config file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config: {exc.strerror}") from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    try:
        return config_from_dict(doc, env)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def config_to_toml(cfg: NodeConfig) -> str:
    """The TOML text of a config (what `polnet init` writes; load_config reads it back)."""
    doc: dict[str, Any] = {"chain_id": cfg.chain_id}
    for name in _SECTIONS:
        section = dataclasses.asdict(getattr(cfg, name))
        doc[name] = {k: list(v) if isinstance(v, tuple) else v for k, v in section.items()}
    return tomli_w.dumps(doc)


def with_overrides(cfg: NodeConfig, **sections: Mapping[str, Any]) -> NodeConfig:
    """A copy of `cfg` with some section fields replaced, validated again."""
    changes = {name: dataclasses.replace(getattr(cfg, name), **values) for name, values in sections.items()}
    out = dataclasses.replace(cfg, **changes)
    out.validate()
    return out
