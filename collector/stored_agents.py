"""What a stored click keeps of its user agent: the agent as it came (the default), or, with
CLICKEDGE_COLLECTOR_USER_AGENTS=reduced, only its browser's and its operating system's families, as
ua-parser (the maintained uap-core rules) reads them: ``Chrome; Windows``, ``Mobile Safari; iOS``, ``curl;
Other``. No version, device or build: enough to report on, too little to single anyone out.

Reduced agents are what a click row keeps; the classifier reads the whole agent while the click waits for
its verdict. A reduced agent later read back as a neighbour's context says less (no version: never a stale
browser; a script's family, such as ``curl``, still reads as one). Cached per distinct agent: ua-parser takes
about a millisecond for one it has not seen.
"""

from __future__ import annotations

from functools import lru_cache

import ua_parser

REDUCED = "reduced"
RAW = "raw"
CHOICES = (RAW, REDUCED)
UNKNOWN = "Other"


@lru_cache(maxsize=8192)
def reduced(user_agent: str) -> str:
    """``user_agent`` as its browser and OS families ("" stays "": no agent at all)."""
    if not user_agent.strip():
        return ""
    result = ua_parser.parse(user_agent)
    browser = result.user_agent.family if result.user_agent is not None else UNKNOWN
    system = result.os.family if result.os is not None else UNKNOWN
    return f"{browser}; {system}"
