"""The demo analytics pipeline: a CSV is profiled; the profile picks one analysis per column by what it found
(numeric, date, categorical, text); numeric columns with outliers grow a further step; a report joins them.

    incoming/X.csv --csv_profile--> profiles/X.json --+--> numeric_summary  --> analysis/X/COL.json --+
                                                      +--> date_summary     --> ...                  +--> report --> reports/X.md
                                                      +--> category_summary --> ...                  |
                                                      +--> text_summary     --> ...  ----------------+
                                   numeric_summary with outliers --> outlier_rows --> analysis/X/COL.outliers.json

Uses only the public handler API and the standard library.
"""
from __future__ import annotations

import csv
import io
import math
import re
import statistics
from collections import Counter
from datetime import date

from gcl_orchestrator import PermanentHandlerError, handler

MISSING = {"", "na", "n/a", "nan", "null", "none", "-"}
DATE_FORMATS = (re.compile(r"^(\d{4})[-/](\d{1,2})[-/](\d{1,2})$"),)


def _rows(ctx, key):
    text = ctx.read_text(key)
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames:
        raise PermanentHandlerError(f"{key} has no header row")
    return reader.fieldnames, list(reader)


def _number(value):
    try:
        x = float(value)
    except ValueError:
        return None
    return x if math.isfinite(x) else None


def _date(value):
    for fmt in DATE_FORMATS:
        m = fmt.match(value)
        if m:
            try:
                return date(int(m[1]), int(m[2]), int(m[3]))
            except ValueError:
                return None
    return None


def _kind(values):
    """What a column holds, judged from its non-missing values."""
    if not values:
        return "empty"
    if all(_number(v) is not None for v in values):
        return "numeric"
    if all(_date(v) is not None for v in values):
        return "date"
    distinct = len(set(values))
    if distinct <= max(20, len(values) // 20):
        return "categorical"
    return "text"


def _slug(text):
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "column"


ANALYSIS = {"numeric": "numeric_summary", "date": "date_summary", "categorical": "category_summary",
            "text": "text_summary"}


@handler("csv_profile")
def profile(ctx):
    """Profile every column, then emit the analysis that fits each, and the report that joins them."""
    source = ctx.inputs[0]
    columns, rows = _rows(ctx, source)
    dataset = ctx.params.get("dataset") or _slug(source.rsplit("/", 1)[-1].rsplit(".", 1)[0])
    found = []
    for col in columns:
        raw = [(r.get(col) or "").strip() for r in rows]
        present = [v for v in raw if v.lower() not in MISSING]
        kind = _kind(present)
        found.append({"column": col, "kind": kind, "missing": len(raw) - len(present),
                      "distinct": len(set(present))})
    analyses = []
    for item in found:
        handler_type = ANALYSIS.get(item["kind"])
        if handler_type is None:
            continue  # an empty column: nothing to analyse
        out = f"analysis/{dataset}/{_slug(item['column'])}.json"
        ctx.emit(computation=f"{item['kind']}:{dataset}:{_slug(item['column'])}", handler_type=handler_type,
                 inputs=[source, ctx.output], output=out, params={"column": item["column"]},
                 priority="high" if item["kind"] == "numeric" else "normal")
        analyses.append(out)
    ctx.emit(computation=f"report:{dataset}", handler_type="report", inputs=[ctx.output, *analyses],
             output=f"reports/{dataset}.md", params={"dataset": dataset, "source": source})
    ctx.log.info("%s: %d rows, %d columns -> %d analyses", source, len(rows), len(columns), len(analyses))
    return {"dataset": dataset, "source": source, "rows": len(rows), "columns": found}


def _column_values(ctx):
    col = ctx.params["column"]
    _, rows = _rows(ctx, ctx.inputs[0])
    return col, [(r.get(col) or "").strip() for r in rows]


@handler("numeric_summary")
def numeric_summary(ctx):
    col, raw = _column_values(ctx)
    xs = [x for x in (_number(v) for v in raw) if x is not None]
    qs = statistics.quantiles(xs, n=20, method="inclusive") if len(xs) > 1 else xs * 19
    q1, q3 = statistics.quantiles(xs, n=4, method="inclusive")[0::2] if len(xs) > 1 else (xs[0], xs[0])
    low, high = q1 - 1.5 * (q3 - q1), q3 + 1.5 * (q3 - q1)
    outliers = [i for i, v in enumerate(raw) if (x := _number(v)) is not None and not low <= x <= high]
    lo, hi = min(xs), max(xs)
    width = (hi - lo) / 10 or 1.0
    hist = Counter(min(int((x - lo) / width), 9) for x in xs)
    summary = {
        "column": col, "kind": "numeric", "count": len(xs), "mean": statistics.fmean(xs),
        "stdev": statistics.stdev(xs) if len(xs) > 1 else 0.0, "min": lo, "p05": qs[0], "median": qs[9],
        "p95": qs[18], "max": hi, "zeros": sum(1 for x in xs if x == 0),
        "histogram": {"start": lo, "width": width, "counts": [hist.get(i, 0) for i in range(10)]},
        "outliers": {"rule": "outside 1.5 IQR", "low": low, "high": high, "count": len(outliers)},
    }
    if outliers:
        # The result decides: only a column with outliers grows the step that lists them.
        detail = ctx.output.rsplit(".json", 1)[0] + ".outliers.json"
        ctx.emit(computation=f"outliers:{ctx.computation.split(':', 1)[1]}", handler_type="outlier_rows",
                 inputs=[ctx.inputs[0], ctx.output], output=detail, params={"column": col}, priority="low")
        summary["outliers"]["detail"] = detail
    return summary


@handler("outlier_rows")
def outlier_rows(ctx):
    col = ctx.params["column"]
    summary = ctx.read_json(ctx.inputs[1])
    low, high = summary["outliers"]["low"], summary["outliers"]["high"]
    _, rows = _rows(ctx, ctx.inputs[0])
    hits = [dict(row, _row=i + 2) for i, row in enumerate(rows)
            if (x := _number((row.get(col) or "").strip())) is not None and not low <= x <= high]
    hits.sort(key=lambda r: -abs(float(r[col]) - summary["median"]))
    return {"column": col, "low": low, "high": high, "count": len(hits), "rows": hits}


@handler("date_summary")
def date_summary(ctx):
    col, raw = _column_values(ctx)
    days = sorted(d for d in (_date(v) for v in raw) if d is not None)
    unique = sorted(set(days))
    gaps = [(a, b) for a, b in zip(unique, unique[1:]) if (b - a).days > 1]
    return {"column": col, "kind": "date", "count": len(days), "first": days[0].isoformat(),
            "last": days[-1].isoformat(), "span_days": (days[-1] - days[0]).days + 1,
            "duplicates": len(days) - len(unique), "gaps": [[a.isoformat(), b.isoformat()] for a, b in gaps[:20]],
            "per_year": dict(sorted(Counter(str(d.year) for d in days).items()))}


@handler("category_summary")
def category_summary(ctx):
    col, raw = _column_values(ctx)
    counts = Counter(v for v in raw if v.lower() not in MISSING)
    total = sum(counts.values())
    return {"column": col, "kind": "categorical", "count": total, "distinct": len(counts),
            "top": [{"value": v, "count": n, "share": n / total} for v, n in counts.most_common(10)]}


@handler("text_summary")
def text_summary(ctx):
    col, raw = _column_values(ctx)
    present = [v for v in raw if v.lower() not in MISSING]
    lengths = [len(v) for v in present]
    return {"column": col, "kind": "text", "count": len(present), "distinct": len(set(present)),
            "min_length": min(lengths), "max_length": max(lengths), "mean_length": statistics.fmean(lengths),
            "examples": sorted(set(present))[:5]}


BARS = " ▁▂▃▄▅▆▇█"


def _spark(counts):
    top = max(counts) or 1
    return "".join(BARS[math.ceil(c / top * 8)] for c in counts)


def _fmt(x):
    return f"{x:,.2f}" if isinstance(x, float) else f"{x:,}"


@handler("report")
def report(ctx):
    """Join the profile and every column analysis into one Markdown report."""
    prof = ctx.read_json(ctx.inputs[0])
    parts = [ctx.read_json(k) for k in ctx.inputs[1:]]
    lines = [f"# {prof['dataset']}", "", f"Source `{prof['source']}`: {prof['rows']:,} rows, "
             f"{len(prof['columns'])} columns.", "", "| column | kind | missing | distinct |", "|---|---|---|---|"]
    lines += [f"| {c['column']} | {c['kind']} | {c['missing']} | {c['distinct']} |" for c in prof["columns"]]
    for part in parts:
        lines += ["", f"## {part['column']} ({part['kind']})", ""]
        if part["kind"] == "numeric":
            h = part["histogram"]
            lines.append(f"mean {_fmt(part['mean'])}, stdev {_fmt(part['stdev'])}; min {_fmt(part['min'])}, "
                         f"median {_fmt(part['median'])}, max {_fmt(part['max'])} (p5 {_fmt(part['p05'])}, "
                         f"p95 {_fmt(part['p95'])}); zeros: {part['zeros']:,}")
            lines.append(f"distribution {_fmt(h['start'])} `{_spark(h['counts'])}` "
                         f"{_fmt(h['start'] + 10 * h['width'])}")
            o = part["outliers"]
            if o["count"]:
                lines.append(f"{o['count']} outliers outside [{_fmt(o['low'])}, {_fmt(o['high'])}]; rows listed "
                             f"in `{o['detail']}`")
            else:
                lines.append("no outliers outside 1.5 IQR")
        elif part["kind"] == "date":
            lines.append(f"{part['first']} to {part['last']} ({part['span_days']:,} days), {part['count']:,} "
                         f"values, {part['duplicates']} duplicates, {len(part['gaps'])} gaps")
            lines.append("per year: " + ", ".join(f"{y}: {n}" for y, n in part["per_year"].items()))
        elif part["kind"] == "categorical":
            lines.append(f"{part['distinct']} values: " + ", ".join(
                f"{t['value']} {t['share']:.0%}" for t in part["top"]))
        else:
            lines.append(f"{part['distinct']:,} distinct texts, length {part['min_length']}-{part['max_length']}"
                         f"; e.g. " + ", ".join(repr(e) for e in part["examples"]))
    return "\n".join(lines) + "\n"
