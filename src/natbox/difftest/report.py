"""The difftest report: a machine-readable summary (JSON) and a human one (Markdown) of a corpus run.

`write_report(results, path)` writes both: `path` itself in the format its suffix names (`.json` or `.md`)
and the other format next to it (same stem). The JSON is
`{"summary": {"passed", "failed", "xfail", "xpass", "scenarios", "seconds", "kernel"},
  "scenarios": [{"name", "file", "description", "status", "seconds", "frames", "conntrack",
                 "differences": [{"kind", "where", "kernel", "natbox", "detail"}], "problems", "reason"}]}`.
plus `"random": {"cases", "examples", "seed", "seconds", "differing", "regression", "reproduced"}` when
random scenarios ran. Statuses: `pass`, `fail` (an unexplained difference), `xfail` (a difference in a scenario marked
`known_failure`, with its reason), `xpass` (a known failure that agrees now: remove the mark).
"""

from __future__ import annotations

import json
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path

from natbox.difftest.compare import Difference

__all__ = ["RandomSummary", "ScenarioResult", "render_markdown", "summary", "write_report"]

STATUSES = ("pass", "fail", "xfail", "xpass")
MAX_DIFFS_REPORTED = 20  # per scenario, in both formats


@dataclass
class ScenarioResult:
    name: str
    file: str
    description: str
    status: str  # one of STATUSES
    seconds: float
    frames: int = 0
    conntrack: int = 0
    differences: list[Difference] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # kernel-run errors (not differences)
    reason: str = ""  # the known_failure reason


def summary(results: list[ScenarioResult]) -> dict[str, object]:
    counts = {s: sum(r.status == s for r in results) for s in STATUSES}
    return {"passed": counts["pass"], "failed": counts["fail"], "xfail": counts["xfail"],
            "xpass": counts["xpass"], "scenarios": len(results),
            "seconds": round(sum(r.seconds for r in results), 1), "kernel": platform.release()}


@dataclass
class RandomSummary:
    """The random-scenario part of a run (natbox.difftest.generator.explore)."""

    cases: int  # scenarios run, shrinking and reruns included
    examples: int  # the max_examples asked for
    seed: int
    seconds: float
    differing: int  # cases that differed
    regression: str = ""  # the file the smallest differing case was written to
    reproduced: int = 0  # how many reruns of it differed again


def _as_json(results: list[ScenarioResult], random: RandomSummary | None = None) -> dict[str, object]:
    rows = []
    for r in results:
        d = asdict(r)
        d["seconds"] = round(r.seconds, 2)
        d["differences"] = [asdict(x) for x in r.differences[:MAX_DIFFS_REPORTED]]
        d["differences_total"] = len(r.differences)
        rows.append(d)
    out: dict[str, object] = {"summary": summary(results), "scenarios": rows}
    if random is not None:
        out["random"] = asdict(random) | {"seconds": round(random.seconds, 1)}
    return out


def render_markdown(results: list[ScenarioResult], *, title: str = "natbox difftest report",
                    random: RandomSummary | None = None) -> str:
    s = summary(results)
    lines = [f"# {title}", "",
             f"{s['scenarios']} scenarios on Linux {s['kernel']}: **{s['passed']} passed, {s['failed']} failed, "
             f"{s['xfail']} known failures (xfail), {s['xpass']} xpass**; {s['seconds']} s in all.", "",
             "Each scenario runs on the real kernel in network namespaces and is replayed through natbox; the",
             "comparison (frames field by field, `conntrack -L`, `iptables-save -c`) follows §10 of the reference.",
             ""]
    if random is not None:
        lines += [f"Random scenarios (`natbox.difftest.generator`, seed {random.seed}): {random.examples} examples, "
                  f"{random.cases} runs with shrinking, **{random.differing} differing**, {random.seconds:.1f} s"
                  + (f"; smallest written to `{random.regression}` (differed again in {random.reproduced} reruns)"
                     if random.regression else "") + ".", ""]
    lines += ["| scenario | status | s | frames | ct | description |", "|---|---|---|---|---|---|"]
    for r in results:
        desc = r.description.replace("|", "\\|")
        lines.append(f"| {r.name} | {r.status} | {r.seconds:.1f} | {r.frames} | {r.conntrack} | {desc} |")
    known = [r for r in results if r.status in ("xfail", "xpass")]
    if known:
        lines += ["", "## Known failures", ""]
        for r in known:
            lines.append(f"- **{r.name}** ({r.status}): {r.reason}")
    shown = [r for r in results if r.differences or r.problems]
    if shown:
        lines += ["", "## Differences", ""]
        for r in shown:
            lines += [f"### {r.name} ({r.status})", "", "```"]
            lines += [f"kernel run: {p}" for p in r.problems]
            lines += [str(d) for d in r.differences[:MAX_DIFFS_REPORTED]]
            if len(r.differences) > MAX_DIFFS_REPORTED:
                lines.append(f"... {len(r.differences) - MAX_DIFFS_REPORTED} more")
            lines += ["```", ""]
    return "\n".join(lines).rstrip() + "\n"


def write_report(results: list[ScenarioResult], path: str | Path,
                 random: RandomSummary | None = None) -> tuple[Path, Path]:
    """Write the JSON and the Markdown report (see the module docstring); returns (json, markdown) paths."""
    p = Path(path)
    jpath, mpath = (p, p.with_suffix(".md")) if p.suffix != ".md" else (p.with_suffix(".json"), p)
    if jpath == mpath:
        mpath = p.with_name(p.name + ".md")
    jpath.write_text(json.dumps(_as_json(results, random), indent=1) + "\n")
    mpath.write_text(render_markdown(results, random=random))
    return jpath, mpath
