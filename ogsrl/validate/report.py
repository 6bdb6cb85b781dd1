"""Validation reports: the readable failure summary, the JSON summary and the HTML Data Docs.

Each GE validation result is rendered with GE's own ``ValidationResultsPageRenderer`` into one HTML page (the same
renderer GE's Data Docs site builder uses; in ephemeral mode there is no docs site, so we call it directly). If the
renderer fails, the page is a plain table rendered from the flattened results. ``index.html`` lists every suite with
its pass/fail counts and links to the pages; ``summary.json`` holds every flattened outcome. The whole folder is
written atomically, so a report is always complete and the previous one stays until the new one is ready.

GE's pages load Bootstrap, jQuery, Font Awesome and a logo from CDNs; :func:`offline_page` removes every such load
(and every absolute link) and points the page at ``static/`` in the same folder: Bootstrap 4.3.1's CSS (the version
GE asks for, MIT, vendored in ``ogsrl/validate/static``), a few icon rules and a small script for the collapses and
the "Failed Only" filter. The Data Docs so render styled with no network.
"""

from __future__ import annotations

import dataclasses
import html
import json
import logging
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ogsrl.errors import DataError
from ogsrl.io import atomic_path
from ogsrl.validate.gx import Outcome

log = logging.getLogger(__name__)


class ValidationFailed(DataError):
    """A validation gate failed; ``outcomes`` holds the failed expectations."""

    def __init__(self, message: str, outcomes: Sequence[Outcome], report_dir: Path | None = None) -> None:
        super().__init__(message)
        first = outcomes[0] if outcomes else None
        self.table = first.table if first else None
        self.column = first.column if first else None
        self.outcomes = list(outcomes)
        self.report_dir = report_dir


def failure_summary(gate: str, outcomes: Sequence[Outcome], report_dir: Path | None = None, limit: int = 20) -> str:
    """Multi-line summary of the failed gating expectations."""
    failed = [o for o in outcomes if o.gating and not o.success]
    n = sum(o.gating for o in outcomes)
    lines = [f"{gate} validation failed: {len(failed)} of {n} expectations failed"]
    lines += [f"  - {o.line()}" for o in failed[:limit]]
    if len(failed) > limit:
        lines.append(f"  … and {len(failed) - limit} more")
    if report_dir is not None:
        lines.append(f"  report: {report_dir / 'index.html'}")
    return "\n".join(lines)


def _fallback_page(name: str, rows: Sequence[Outcome]) -> str:
    cells = "".join(
        f"<tr class={'ok' if o.success else 'bad'}><td>{'✔' if o.success else '✘'}</td>"
        f"<td>{html.escape(o.column)}</td><td>{html.escape(o.expectation)}</td><td>{html.escape(o.what)}</td>"
        f"<td>{'' if o.unexpected_count is None else o.unexpected_count}</td>"
        f"<td>{html.escape(', '.join(o.examples) or o.observed or o.error)}</td></tr>"
        for o in rows
    )
    return (
        f"<!doctype html><html><head><meta charset=utf-8><title>{html.escape(name)}</title>{_STYLE}</head><body>"
        f"<h1>{html.escape(name)}</h1><table><tr><th></th><th>column</th><th>expectation</th><th>rule</th>"
        f"<th>unexpected</th><th>examples</th></tr>{cells}</table></body></html>"
    )


_STYLE = (
    "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;"
    "padding:4px 8px;text-align:left}tr.bad td{background:#fde2e2}tr.ok td{background:#e6f4ea}</style>"
)


STATIC_DIR = Path(__file__).with_name("static")
"""vendored assets copied into every Data Docs folder as ``static/``"""
STATIC_FILES = ("bootstrap-4.3.1.min.css", "BOOTSTRAP-LICENSE", "ogsrl-docs.css", "ogsrl-docs.js")
_EXTERNAL = r"""(?:https?:)?//"""
_LOADS = (
    re.compile(rf"""<link\b[^>]*\bhref=["']?{_EXTERNAL}[^>]*>""", re.I),
    re.compile(r"""<script\b[^>]*>.*?</script\s*>""", re.I | re.S),  # CDN scripts and the jQuery inline ones
    re.compile(rf"""<img\b[^>]*\bsrc=["']?{_EXTERNAL}[^>]*>""", re.I | re.S),
    re.compile(r"<footer\b.*?</footer\s*>", re.I | re.S),  # GX newsletter
    re.compile(r"""<link\b[^>]*\brel=["']?(?:shortcut )?icon[^>]*>""", re.I),  # favicon of GE's site layout
)
_HOME = re.compile(r"""href=(["'])(?:\.\./)+index\.html\1""")
_SITE_HREF = re.compile(r"""\shref=(["'])\.\./[^"']*\1""")
_EXTERNAL_HREF = re.compile(rf"""\shref=(["']){_EXTERNAL}[^"']*\1""", re.I)
_HEAD_ASSETS = (
    '<link rel="stylesheet" href="static/bootstrap-4.3.1.min.css">'
    '<link rel="stylesheet" href="static/ogsrl-docs.css">'
    '<script src="static/ogsrl-docs.js"></script>'
)


def offline_page(page: str) -> str:
    """A GE Data Docs page that loads nothing from the network: CDN stylesheets, scripts (inline ones too: they
    need jQuery), remote images, the favicon and the newsletter footer removed, absolute links made plain text, "Home" pointed
    at this folder's index.html, links into GE's site layout (suite pages we do not write) made plain text, the vendored ``static/`` assets linked in ``<head>``."""
    for pattern in _LOADS:
        page = pattern.sub("", page)
    page = _EXTERNAL_HREF.sub("", page)
    page = _HOME.sub('href="index.html"', page)  # GE's site layout is not ours: "Home" is this folder's index,
    page = _SITE_HREF.sub("", page)  # and its suite pages do not exist
    head = re.search(r"<head\b[^>]*>", page, re.I)
    if head is None:
        return _HEAD_ASSETS + page
    return page[: head.end()] + _HEAD_ASSETS + page[head.end():]


def write_static(out_dir: Path) -> None:
    """Copy the vendored assets into ``out_dir/static``."""
    (out_dir / "static").mkdir(parents=True, exist_ok=True)
    for name in STATIC_FILES:
        shutil.copyfile(STATIC_DIR / name, out_dir / "static" / name)


def _ge_page(result: Any) -> str:
    from great_expectations.render.renderer import ValidationResultsPageRenderer
    from great_expectations.render.view import DefaultJinjaPageView

    return offline_page(DefaultJinjaPageView().render(ValidationResultsPageRenderer().render(result)))


def write_reports(
    out_dir: Path,
    title: str,
    runs: Sequence[tuple[str, Any]],
    outcomes: Sequence[Outcome],
    summary: dict[str, Any],
) -> None:
    """Write ``out_dir/{index.html, summary.json, <suite>.html, <suite>.json}`` atomically.

    Args:
        out_dir: report folder (replaced as a whole).
        title: page title, e.g. "raw tables".
        runs: ``(suite_name, GE validation result)`` pairs.
        outcomes: all flattened outcomes.
        summary: headline numbers for the JSON summary and the index page.
    """
    with atomic_path(out_dir) as tmp:
        tmp.mkdir(parents=True)
        write_static(tmp)
        rows = []
        for name, result in runs:
            mine = [o for o in outcomes if o.suite == name]
            try:
                page = _ge_page(result)
                renderer = "great_expectations"
            except Exception as exc:  # noqa: BLE001 - any renderer failure falls back to our own table
                log.warning("GE renderer failed for %s (%s); writing a plain page", name, exc)
                page = _fallback_page(name, mine)
                renderer = "ogsrl"
            (tmp / f"{name}.html").write_text(page, encoding="utf-8")
            (tmp / f"{name}.json").write_text(
                json.dumps(result.to_json_dict(), indent=1, default=str) + "\n", encoding="utf-8"
            )
            n_fail = sum(not o.success for o in mine)
            gating = any(o.gating for o in mine)
            rows.append(
                f"<tr class={'bad' if n_fail and gating else 'ok'}><td><a href='{name}.html'>{html.escape(name)}</a>"
                f"</td><td>{len(mine)}</td><td>{n_fail}</td><td>{'yes' if gating else 'no (sample)'}</td>"
                f"<td><a href='{name}.json'>json</a></td><td>{renderer}</td></tr>"
            )
        failed = [o for o in outcomes if o.gating and not o.success]
        items = "".join(f"<li>{html.escape(o.line())}</li>" for o in failed)
        head = "".join(
            f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in summary.items()
        )
        index = (
            f"<!doctype html><html><head><meta charset=utf-8><title>validation: {html.escape(title)}</title>"
            f"{_STYLE}</head><body><h1>Validation: {html.escape(title)} — "
            f"{'PASSED' if not failed else 'FAILED'}</h1><table>{head}</table>"
            f"{'<h2>Failures</h2><ul>' + items + '</ul>' if failed else ''}"
            "<h2>Suites</h2><table><tr><th>suite</th><th>expectations</th><th>failed</th><th>gating</th>"
            f"<th>result</th><th>renderer</th></tr>{''.join(rows)}</table></body></html>"
        )
        (tmp / "index.html").write_text(index, encoding="utf-8")
        doc = {"summary": summary, "outcomes": [dataclasses.asdict(o) for o in outcomes]}
        (tmp / "summary.json").write_text(json.dumps(doc, indent=1, default=str) + "\n", encoding="utf-8")
