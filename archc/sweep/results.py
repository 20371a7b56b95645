"""A sweep's results: one row per trial (results.csv, results.json and a printed table), the plot of trials
(trials.png) and the best trial's spec (best.json). Reads the study; writes atomically."""
from __future__ import annotations

import csv
import io
import json
import math
from typing import Any

from archc import strict_json
from archc.language.sweep import apply
from archc.sweep.folder import INTERRUPTED, Sweep, beside
from archc.sweep.trial import COMPLETE, FAILED, PRUNED, Outcome
from archc.util import write_bytes_atomic, write_text_atomic

STATES = {"COMPLETE": COMPLETE, "PRUNED": PRUNED, "FAIL": FAILED, "RUNNING": "running", "WAITING": "waiting"}


def rows(sweep: Sweep, study: Any) -> list[dict[str, Any]]:
    """One row per trial, in trial order: number, state, value (the validation metric), test metric, epochs,
    seconds, each target's value, its run folder and the error of a failed one."""
    out = []
    for t in study.get_trials(deepcopy=False):
        state = INTERRUPTED if t.user_attrs.get(INTERRUPTED) else STATES.get(t.state.name, t.state.name.lower())
        value = t.value if t.value is not None else (t.intermediate_values[max(t.intermediate_values)]
                                                    if state == PRUNED and t.intermediate_values else None)
        out.append({"trial": t.number, "state": state, f"val_{sweep.metric}": value,
                    f"test_{sweep.metric}": t.user_attrs.get("test"), "epochs": t.user_attrs.get("epochs"),
                    "seconds": t.user_attrs.get("seconds"), **{k: t.params.get(k) for k in sweep.space},
                    "run_dir": str(sweep.folder.trial(t.number)), "error": t.user_attrs.get("error") or ""})
    return out


def best_trial(study: Any) -> Any:
    """The best complete trial, None when none completed."""
    from optuna.trial import TrialState

    return study.best_trial if study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) else None


def write_tables(sweep: Sweep, study: Any) -> list[dict[str, Any]]:
    """results.csv and results.json (rewritten after every trial, so a killed sweep still has its table)."""
    table = rows(sweep, study)
    text = io.StringIO()
    if table:
        writer = csv.DictWriter(text, fieldnames=list(table[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(table)
    write_text_atomic(sweep.folder.path("results_csv"), text.getvalue())
    write_text_atomic(sweep.folder.path("results_json"), strict_json.dumps(table, indent=2) + "\n")
    return table


def plot(sweep: Sweep, table: list[dict[str, Any]]) -> None:
    """trials.png: each trial's validation metric by trial number (complete and pruned marked apart), the best so
    far as a step line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    key = f"val_{sweep.metric}"
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    for state, style in ((COMPLETE, "o"), (PRUNED, "x")):
        pts = [(r["trial"], r[key]) for r in table if r["state"] == state and _finite(r[key])]
        if pts:
            ax.plot(*zip(*pts), style, label=state, alpha=0.8)
    best, line = None, []
    for r in table:
        if r["state"] == COMPLETE and _finite(r[key]):
            better = best is None or (r[key] > best if sweep.maximize else r[key] < best)
            best = r[key] if better else best
        if best is not None:
            line.append((r["trial"], best))
    if line:
        ax.step(*zip(*line), where="post", label="best so far", color="black")
    ax.set_xlabel("trial")
    ax.set_ylabel(f"validation {sweep.metric}")
    ax.set_title(f"{sweep.raw.get('model', {}).get('name', '')}: {len(table)} trials")
    ax.legend(loc="best")
    ax.grid(alpha=0.3)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    plt.close(fig)
    write_bytes_atomic(sweep.folder.path("plot"), buffer.getvalue())


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def conclude(sweep: Sweep, study: Any) -> dict[str, Any]:
    """The tables, the plot and best.json (the best trial's spec, its values written in, no [sweep]); the
    summary `archc sweep` prints."""
    table = write_tables(sweep, study)
    plot(sweep, table)
    best = best_trial(study)
    summary: dict[str, Any] = {"folder": str(sweep.folder.root), "metric": f"val_{sweep.metric}",
                               "direction": "maximize" if sweep.maximize else "minimize", "trials": table,
                               "best": None, "files": {r: str(sweep.folder.path(r)) for r in
                                                       ("study", "results_csv", "results_json", "plot")}}
    if best is not None:
        spec = beside(apply(sweep.raw, best.params), sweep, sweep.folder.root)
        write_text_atomic(sweep.folder.path("best"), json.dumps(spec, indent=2) + "\n")
        summary["best"] = {"trial": best.number, "value": best.value, "values": best.params,
                           "run_dir": str(sweep.folder.trial(best.number)), "spec": str(sweep.folder.path("best"))}
    return summary


def line(outcome: Outcome, sweep: Sweep) -> str:
    """'trial 3 complete: val accuracy 0.9611 after 2 epochs (params.width 48, train.optimizer.lr 0.0031)'."""
    values = ", ".join(f"{k} {_show(v)}" for k, v in outcome.values.items())
    what = (f"val {sweep.metric} {outcome.value:.4f}" if _finite(outcome.value) else outcome.error or "no value")
    when = f" after {outcome.epochs} epoch{'s' * (outcome.epochs != 1)}" if outcome.epochs else ""
    return f"trial {outcome.number} {outcome.state}: {what}{when} ({values})"


def _show(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def table_text(summary: dict[str, Any]) -> str:
    """The results as an aligned text table, best trial marked with *."""
    table, key = summary["trials"], summary["metric"]
    if not table:
        return "no trials"
    targets = [k for k in table[0] if k not in ("trial", "state", key, f"test_{key[4:]}", "epochs", "seconds",
                                                 "run_dir", "error")]
    head = ["trial", "state", key, "epochs", *targets]
    cells = [[str(r["trial"]), r["state"], _show(r[key]) if _finite(r[key]) else "-", str(r["epochs"] or "-"),
              *(_show(r[t]) for t in targets)] for r in table]
    best = (summary["best"] or {}).get("trial")
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(head)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(head, widths))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(cell, widths)) + ("  *" if r["trial"] == best else "")
              for cell, r in zip(cells, table)]
    return "\n".join(lines)
