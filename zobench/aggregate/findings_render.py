"""FINDINGS.md: a summary table of every claim's effect, interval and verdict, then one section per claim
(claim, source, how it is tested, cells, measurement, verdict, protocol, notes).
"""
from __future__ import annotations

import math
from pathlib import Path

from zobench.aggregate.claims import CLAIMS_DIR
from zobench.aggregate.findings_effect import Finding, _replicated, _scale, _value_column, expectation_text


def _fmt(v: float) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    return f"{v:.3g}" if abs(v) < 10 else f"{v:.1f}"


def _searches(records: list[dict]) -> list[str]:
    """The dev-only learning-rate searches the runs used: grid, dev score per point, choice, edge flags."""
    from zobench.aggregate.search import at_edge

    if not records:
        return []
    lines = ["", "## Learning-rate searches", "",
             "Each block's learning rate was chosen on dev only (seed 0, the eval set never scored) by the rule "
             f"in `search.json`; {records[0].get('rule', '')}. A choice at the grid's edge (of 3 or more values) "
             "is flagged: the best may lie beyond it.", "",
             "| block | group | steps | dev score per grid point | chosen |", "|---|---|---:|---|---|"]
    for rec in records:
        grid = rec.get("grid", {})
        for choice in rec.get("chosen", []):
            group = choice.get("group", {})
            rows = [r for r in rec.get("results", []) if r.get("group") == group]
            scores = ", ".join(f"{'/'.join(str(v) for v in r['values'].values())}: "
                               + (_fmt(r['best_dev_score']) if r.get("status") == "completed" else str(r.get("status")))
                               for r in rows)
            values = choice.get("values")
            chosen = ", ".join(f"{k}={v}" for k, v in values.items()) if values else "— (a point did not complete)"
            edge = at_edge(grid, values)
            flag = f" **at the grid's edge** ({', '.join(edge)})" if edge else ""
            group_text = ", ".join(f"{k}={v}" for k, v in group.items())
            lines.append(f"| {rec.get('block', '')} | {group_text} | {rec.get('steps', '')} | {scores} | {chosen}{flag} |")
    return lines


def render(findings: list[Finding], runs_dir: str | Path, n_runs: int, claims_dir: str | Path = CLAIMS_DIR,
           searches: list[dict] | None = None) -> str:
    lines = ["# Findings: the papers' claims against zobench's runs", "",
             f"Runs: `{runs_dir}` ({n_runs} run directories). Claims: `{claims_dir}` ({len(findings)}). "
             "Verdicts: *supported* when the 95% interval lies on the claimed side, *contradicted* when it lies "
             "on the other side, *inconclusive* otherwise (at this scale), when cells are missing, or when no "
             "arm moved (every run predicts what its untuned model predicted). "
             "n: units (runs paired across the cells), with the replicate runs (seeds) per unit of each cell "
             "where a cell has several, averaged.", "",
             "| claim | effect | 95% CI | n | verdict |", "|---|---:|---|---:|---|"]
    for f in findings:
        unit = _scale(f.claim, _value_column(f.claim, {}))[1]
        reps = f" ({' / '.join(f.replicates.values())} runs per unit)" if _replicated(f) else ""
        lines.append(f"| [{f.claim.title}](#{f.claim.id}) | {_fmt(f.effect)} {unit} | [{_fmt(f.lo)}, {_fmt(f.hi)}] "
                     f"| {f.n_units}{reps} | {f.verdict}{f' ({f.scope})' if f.scope else ''}"
                     f"{' (no arm moved)' if f.unmoved else ''} |")
    for f in findings:
        c, src = f.claim, f.claim.source
        unit = _scale(c, _value_column(c, {}))[1]
        quote = f"“{src['quote']}”" if src.get("quote") and src.get("verbatim") else src.get("quote", "")
        lines += ["", f"<a id=\"{c.id}\"></a>", f"## {c.title}", "",
                  f"**Claim.** {c.claim}", "",
                  f"**Source.** {src['paper']}" + (f", {src['where']}" if src.get("where") else "")
                  + (f": {quote}" if quote else "") + (" (paraphrase)" if quote and not src.get("verbatim") else "")
                  + (f" <{src['url']}>" if src.get("url") else ""), "",
                  f"**Tested as.** {c.effect['kind']} of {_value_column(c, {})}: {expectation_text(c, unit)} "
                  f"(`{c.path.name}`)", "", "**Cells.**", ""]
        lines += [f"- {label}: {where} — {n} run(s)"
                  + (f"; n = {f.replicates[label]} replicate run(s) per unit (seeds, averaged)"
                     if label in f.replicates else "") for label, where, n in f.cells]
        why = f" ({f.reason})" if f.reason else ""
        lines += ["", f"**Measured.** {_fmt(f.effect)} {unit}, 95% CI [{_fmt(f.lo)}, {_fmt(f.hi)}]; "
                  f"n = {f.n_units} unit(s)"
                  + (" × " + ", ".join(f"{lab} {k}" for lab, k in f.replicates.items()) + " replicate run(s)"
                     if _replicated(f) else "")
                  + (f", {f.n_examples} eval examples" if f.n_examples else "")
                  + (f"; {f.method}" if f.method else "")]
        if f.seeds:
            lines.append(f"\nOver the {f.seeds['n']} units (Student t, no eval-set resampling): {_fmt(f.seeds['mean'])} [{_fmt(f.seeds['lo'])}, "
                         f"{_fmt(f.seeds['hi'])}].")
        scope = f" ({f.scope})" if f.scope else ""
        lines += ["", f"**Verdict.** {f.verdict}{scope}{why}", "",
                  "**Protocol.** " + "; ".join(f"{k} {v}" for k, v in f.protocol.items())]
        lines += [f"- note: {n}" for n in [*c.notes, *f.notes]]
    lines += _searches(searches or [])
    return "\n".join(lines) + "\n"
