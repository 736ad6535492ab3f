"""One way to call a local node's admin endpoint, with errors an operator can act on.

The node answers JSON, and on a refusal a JSON object whose `error` is the ledger's or
the node's reason; that reason is what the operator sees, behind `refused`. A 400 means
the request was invalid (a ConfigError: bad input, exit 2); any other refusal, and a
node that is not there, is `Unavailable` or a plain PolnetError (exit 1).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from protocol.errors import ConfigError, PolnetError, Unavailable

#: Largest answer read from a node; a status or task document is a few KiB.
MAX_ANSWER_BYTES = 1024 * 1024


def request_json(
    url: str,
    *,
    timeout: float,
    refused: str,
    body: bytes | None = None,
    content_type: str = "application/json",
) -> dict[str, Any]:
    """GET `url` (or POST `body`) and return the JSON object answered."""
    headers = {"content-type": content_type} if body is not None else {}
    req = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET",
                                 headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            doc = json.loads(resp.read(MAX_ANSWER_BYTES))
    except urllib.error.HTTPError as exc:
        try:
            reason = json.loads(exc.read(MAX_ANSWER_BYTES)).get("error", "")
        except (ValueError, AttributeError):
            reason = f"HTTP {exc.code}"
        if exc.code == 400:
            raise ConfigError(f"{refused}: {reason}") from None
        raise PolnetError(f"{refused}: {reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise Unavailable(f"{url}: node not reachable ({exc}); is it running?") from None
    except ValueError:
        raise PolnetError(f"{url}: node answered something that is not JSON") from None
    if not isinstance(doc, dict):
        raise PolnetError(f"{url}: node answered JSON that is not an object")
    return doc
