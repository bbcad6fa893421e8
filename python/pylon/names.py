"""The one rule for a cap's name, read from ``schemas/common.schema.json``.

Plans, trust files and cap manifests all name caps; their schemas refer to
the ``capName`` definition there, and Python code (``pylon.plan``,
``pylon.trust``, the builders) takes :data:`CAP_NAME_PATTERN` from here, so
the rule is written in exactly one place. ``tests/test_manifest.py`` checks
that nothing else spells it out (the plan's schema, which carries a copy for
editors that read it alone, must agree).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

__all__ = ["CAP_NAME_PATTERN", "CAP_NAME_RULE", "is_cap_name"]

_CAP_NAME = json.loads((Path(__file__).parent / "schemas" / "common.schema.json")
                       .read_text(encoding="utf-8"))["$defs"]["capName"]

#: Cap names: lowercase letters, digits, ``_`` and ``-``; at most 64 characters
#: (a JSON Schema pattern: its ``$`` means the very end).
CAP_NAME_PATTERN: str = _CAP_NAME["pattern"]
#: The rule in words, for messages.
CAP_NAME_RULE: str = _CAP_NAME["description"]

# fullmatch without the anchors: re's '$' would also match before a final newline.
_CAP_NAME_RE = re.compile(CAP_NAME_PATTERN.removeprefix("^").removesuffix("$"))


def is_cap_name(name: object) -> bool:
    """Whether ``name`` is a valid cap name (``"crc32c\\n"`` is not)."""
    return isinstance(name, str) and _CAP_NAME_RE.fullmatch(name) is not None
