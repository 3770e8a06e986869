"""Every check a candidate passes before it may be trained, cheapest first: the static allow-list, the code
hash against the archive, the sandboxed property checks, then its behaviour against the archive's."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from discopop_cli.discover import sandbox
from discopop_cli.discover.candidate import Candidate, code_hash
from discopop_cli.discover.static import Checked, Rejected, check_source

# Two candidates whose losses agree this closely on the fixed inputs are the same loss.
SAME_BEHAVIOUR_RTOL = 1e-5


@dataclass(frozen=True)
class Passed:
    checked: Checked
    fingerprint: list[float]
    gradient: list[float]


def validate(
    candidate: Candidate, digest: str, entries: list[dict[str, Any]], *, beta: float, limits: sandbox.Limits
) -> Passed:
    """Raise Rejected(stage, reason) at the first check the candidate fails."""
    if not candidate.code.strip():
        raise Rejected("static", candidate.thought or "the proposal holds no code")
    checked = check_source(candidate.code)
    for entry in entries:
        if entry.get("code_hash") == digest:
            raise Rejected("duplicate", f"the same code as {entry['id']}")
    verdict = sandbox.probe(candidate.code, checked.function, paper_form=checked.paper_form, beta=beta, limits=limits)
    if not verdict.ok:
        raise Rejected("sandbox", verdict.reason)
    for entry in entries:
        other = entry.get("fingerprint")
        if other and _same(other, verdict.fingerprint):
            raise Rejected("duplicate", f"behaves like {entry['id']} on the fixed inputs")
    return Passed(checked, verdict.fingerprint, verdict.gradient)


def _same(a: list[float], b: list[float]) -> bool:
    return len(a) == len(b) and all(
        math.isclose(x, y, rel_tol=SAME_BEHAVIOUR_RTOL, abs_tol=1e-8) for x, y in zip(a, b, strict=False)
    )


def digest_of(candidate: Candidate) -> str:
    return code_hash(candidate.code)
