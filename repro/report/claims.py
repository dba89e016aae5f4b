"""The paper's two claims against this suite's estimates: per task, S3FT − SFT in-domain on the task's headline
metric, and S3FT − SFT of the paper-four average drop - each with the paper's claimed effect, the estimate with its
95% CI, p and Holm-adjusted p, the MDE and n. One table and one forest plot per preset (from the preset's comparison
rows: nothing is typed in), a table and a figure across presets, and the README's generated claims block.

The claim rows of a preset are also written as JSON (``claims.json`` beside its tables), so the across-presets
outputs and the README block are rebuilt from committed files without recomputing any statistic."""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

from tabulate import tabulate

from repro.report.formatting import Table, mde_txt, p_txt
from repro.report.load import Grid
from repro.report.measures import METRIC_LABEL
from repro.report.tables import PAPER_DATASET

CLAIM_PAIR = ("s3ft", "sft")


def paper_claims(ref: dict, task: str) -> dict:
    """The paper's S3FT − SFT for a task's in-domain claim and for the average drop, in points, with where each
    comes from. Reading tasks other than NQ get the NQ value for orientation only (a different dataset)."""
    t2 = ref["table2_in_domain_accuracy"]["values"]
    ab = ref["abstract_average_drop"]
    ds = PAPER_DATASET.get(task)
    in_domain = None if ds is None else round(t2["s3ft"][ds] - t2["sft"][ds], 1)
    src = ("—" if ds is None else f"Table 2 {ds}: {t2['s3ft'][ds]} − {t2['sft'][ds]}"
           + (" (NQ, not SQuAD: orientation only)" if task == "squad" else ""))
    drop = round(ab["s3ft"]["value"] - ab["sft"]["value"], 1)
    return {"in_domain": in_domain, "in_domain_source": src, "drop": drop,
            "drop_source": f"abstract: S3FT {ab['s3ft']['value']} − SFT 'up to' {ab['sft']['value']} "
                           "(SFT's worst dataset)"}


def claim_rows(g: Grid, crows: list[dict]) -> list[dict]:
    """The claim rows of one preset, from its comparison rows (repro.report.comparisons.comparison_rows): effects,
    CIs and MDEs in points, the paper's effect in points (None where the paper has none for the task)."""
    out = []
    a, b = CLAIM_PAIR
    for r in crows:
        if (r["a"], r["b"]) != (a, b) or r["kind"] == "none":
            continue
        if r["kind"] == "in_domain" and r["measure"].endswith("(headline)"):
            claim, sign = "in-domain", f"{METRIC_LABEL[r['metric']]}; > 0: S3FT better"
        elif r["kind"] == "drop" and r["measure"].startswith("paper-four"):
            claim, sign = "average drop", "paper-four average drop, base − tuned; < 0: S3FT forgets less"
        else:
            continue
        paper = paper_claims(g.ref, r["task"])
        key = "in_domain" if claim == "in-domain" else "drop"
        out.append({"preset": g.preset, "task": r["task"], "claim": claim, "measure": sign,
                    "paper": paper[key], "paper_source": paper[key + "_source"],
                    "estimate": 100.0 * r["diff"], "ci95": [100.0 * r["ci95"][0], 100.0 * r["ci95"][1]],
                    "mde": 100.0 * r["mde"] if math.isfinite(r["mde"]) else None,
                    "n": r["n"], "n_clusters": r.get("n_clusters", r["n"]) if r["kind"] == "in_domain" else None,
                    "p": r["p_value"], "p_holm": r["p_holm"], "family": r["family"],
                    "seeds": [r["seeds_a"], r["seeds_b"]], "reading": r["verdict"]})
    return out


def _n_txt(r: dict) -> str:
    return f"{r['n']}" + (f" ({r['n_clusters']} passages)" if r.get("n_clusters") and r["n_clusters"] < r["n"]
                          else "")


def _pts1(x: float) -> str:
    return f"{round(x, 1) + 0.0:+.1f}"


def claim_cells(r: dict) -> list[str]:
    """One claim row as table cells (the same wording in the per-preset table, across presets and the README)."""
    return [r["claim"], r["task"], "—" if r["paper"] is None else _pts1(r["paper"]),
            f"{_pts1(r['estimate'])} [{_pts1(r['ci95'][0])}, {_pts1(r['ci95'][1])}]", p_txt(r["p"]),
            p_txt(r["p_holm"]), "none detectable" if r["mde"] is None else mde_txt(r["mde"] / 100.0),
            _n_txt(r), f"{r['seeds'][0]}/{r['seeds'][1]}", r["reading"]]


CLAIM_HEADERS = ["claim", "task", "paper S3FT − SFT", "ours S3FT − SFT [95% CI]", "p", "p (Holm)", "MDE", "n",
                 "seeds S3FT/SFT", "reading"]

CLAIM_NOTES = [
    "Points. In-domain: S3FT − SFT on the task's headline metric (> 0: S3FT better); paper: its Table 2 (Mistral-7B; "
    "beside squad the NQ column, a different dataset, for orientation only). Average drop: S3FT − SFT of the "
    "paper-four average drop, base − tuned (< 0: S3FT forgets less); paper: the abstract's S3FT 2.5 − SFT 'up to' "
    "4.4 (SFT's worst fine-tuning dataset), -1.9.",
    "p: the row's own test; p (Holm): adjusted over every tested row of the preset's comparisons table (the "
    "family); a direction is read only when p (Holm) < 0.05. MDE: the effect this n detects with 80% power at "
    "two-sided 0.05 - an estimate inside ±MDE is what 'no detectable difference' means here. Figure: claims.png.",
]


def claims_table(g: Grid, rows: list[dict], used: list) -> Table:
    return Table("claims", "The paper's claims: S3FT − SFT, paper vs this suite", CLAIM_HEADERS,
                 [claim_cells(r) for r in rows], used, list(CLAIM_NOTES))


def claims_json(rows: list[dict]) -> str:
    return json.dumps(rows, indent=1, sort_keys=True) + "\n"


def load_claims(tables: Path) -> list[dict]:
    """Every preset's claim rows from <tables>/<preset>/claims.json, presets in name order."""
    return [r for p in sorted(tables.glob("*/claims.json")) for r in json.loads(p.read_text())]


def claims_markdown(rows: list[dict]) -> str:
    """The across-presets claims table (Markdown): what the README's generated block holds."""
    body = tabulate([[r["preset"], *claim_cells(r)] for r in rows], ["preset", *CLAIM_HEADERS], tablefmt="pipe",
                    disable_numparse=True, colalign=["left"] * (len(CLAIM_HEADERS) + 1))
    return body + "\n"


def _markers(preset: str | None) -> tuple[str, str]:
    tag = f"claims:{preset}" if preset else "claims"
    return (f"<!-- BEGIN {tag}: generated by python paper_tables.py from results/tables/*/claims.json -->",
            f"<!-- END {tag} -->")


BLOCK_RE = re.compile(r"<!-- BEGIN claims(?::(?P<preset>[\w.-]+))?: generated by python paper_tables.py from "
                      r"results/tables/\*/claims\.json -->.*?<!-- END claims(?::(?P=preset))? -->", re.S)


def claims_block(rows: list[dict], preset: str | None = None) -> str:
    """A generated claims block, markers included: every preset's rows (preset None) or one preset's."""
    begin, end = _markers(preset)
    sel = [r for r in rows if preset is None or r["preset"] == preset]
    body = claims_markdown(sel).rstrip("\n") if sel else f"(no committed claims for {preset or 'any preset'})"
    return "\n".join([begin, "", body, "", end])


def rewrite_blocks(text: str, rows: list[dict]) -> str:
    """`text` with every generated claims block (README, docs/) rebuilt from `rows`."""
    return BLOCK_RE.sub(lambda m: claims_block(rows, m.group("preset")), text)
