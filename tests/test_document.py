"""The shared report layer: the cell formatter, the document renderers, and the committed probe and
study reports reproduced byte for byte from their saved results."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from intrinsic.report.document import Bullets, Heading, Image, Paragraph, Table, render_html, render_markdown
from intrinsic.report.format import cell, human

RESULTS = Path(__file__).resolve().parents[1] / "studies" / "results"


@pytest.mark.parametrize(("value", "kw", "text"), [
    (None, {}, "-"), (True, {}, "yes"), (False, {}, "no"), (True, {"bools": False}, "True"),
    (0.123456, {}, "0.1235"), (0.123456, {"digits": 3}, "0.123"), (12345.6, {}, "12.3k"), (-2.5e6, {}, "-2.5M"),
    (12345.6, {"large": "comma"}, "1.235e+04"), (12345.6, {"large": "plain", "digits": 3}, "1.23e+04"),
    (9999, {}, "9999"), (74496, {}, "74.5k"), (74496, {"large": "comma"}, "74,496"), (74496, {"large": "plain"}, "74496"),
    (3, {"large": "comma"}, "3"), ("a|b", {}, "a|b"),
])
def test_cell(value, kw, text):
    assert cell(value, **kw) == text


def test_human():
    assert [human(n) for n in (None, 999, 1000, 74496, 1234567, 2.5e9, -1500)] == \
        ["n/a", "999", "1k", "74.5k", "1.23M", "2.5G", "-1.5k"]


def test_markdown_blocks():
    blocks = [Heading(1, "Title"), Paragraph("line 1\nline 2"), Bullets(("*a*: x", "b")),
              Table.of_records("T", ["n", "ok", "x"], [{"n": 74496, "ok": True, "x": "a|b"}, {"n": 1.5}]),
              Table(("h",), ()), Table.of_records("Empty", ["h"], []),
              Image(Path("/x/plot.png"), "alt", "Caption."), Image(Path("bare.png"), "bare")]
    assert render_markdown(blocks) == (
        "# Title\n\nline 1\nline 2\n\n- *a*: x\n- b\n\n"
        "**T**\n\n| n | ok | x |\n|---|---|---|\n| 74.5k | yes | a/b |\n| 1.5 | - | - |\n\n"
        "| h |\n|---|\n\n**Empty**: none.\n\n![alt](plot.png)\n\n*Caption.*\n\n![bare](bare.png)\n")


def test_html_blocks(tmp_path):
    png = tmp_path / "p.png"
    png.write_bytes(b"\x89PNG")
    blocks = [Heading(2, "A <b> & `code`"), Paragraph("**bold** and *it*\nnext"),
              Table.of_records("T<", ["c"], [{"c": "x<y"}]), Table(("h",), (("1",),)), Image(png, "a\"lt", "cap"),
              Image(png, "alt")]
    page = render_html(blocks, title="T & U")
    body = page.split("<body>", 1)[1]
    assert page.startswith("<!doctype html><html><head><meta charset='utf-8'><title>T &amp; U</title><style>")
    assert body == (
        "<h2>A &lt;b&gt; &amp; <code>code</code></h2><p><b>bold</b> and <i>it</i><br>\nnext</p>"
        "<table><caption>T&lt;</caption><tr><th>c</th></tr><tr><td>x&lt;y</td></tr></table>"
        "<table><tr><th>h</th></tr><tr><td>1</td></tr></table>"
        '<figure><img alt="a&quot;lt" src="data:image/png;base64,iVBORw=="><figcaption>cap</figcaption></figure>'
        '<figure><img alt="alt" src="data:image/png;base64,iVBORw=="></figure></body></html>\n')
    assert "<title>" not in render_html([])


def _no_images(html: str) -> str:
    return re.sub(r"base64,[A-Za-z0-9+/=]+", "base64,", html)  # PNG bytes depend on the matplotlib build


@pytest.mark.parametrize("study", ["weight-types", "placement-ablation"])
def test_committed_study_report_reproduces(study, tmp_path):
    import shutil

    from intrinsic.study.report import write_report

    copy = shutil.copytree(RESULTS / study, tmp_path / study)  # loading rebuilds results.json in place
    files, _, _ = write_report(copy, dest=tmp_path / "out")
    assert Path(files.markdown).read_text() == (RESULTS / study / "report.md").read_text()
    assert _no_images(Path(files.html).read_text()) == _no_images((RESULTS / study / "report.html").read_text())


def test_committed_probe_report_reproduces():
    from intrinsic.probes.schema import ProbeReport
    from intrinsic.report.probe import document
    from intrinsic.report.plots import PLOT_FILES

    src = RESULTS / "probe-minilm-rotten-tomatoes"
    plots = [src / p for p in PLOT_FILES if (src / p).is_file()]
    assert render_markdown(document(ProbeReport.load(src), plots)) == (src / "report.md").read_text()


@dataclass(frozen=True)
class _Inner:
    n: int

    def __post_init__(self):
        if self.n < 0:
            raise ValueError("`n` must be >= 0")


@dataclass(frozen=True)
class _Outer:
    inner: _Inner | None = None
    xs: list[float] | None = None


def test_from_dict_does_not_swallow_errors():
    """A nested record that fails validation raises; a value of the wrong shape passes through as before."""
    from intrinsic.results import from_dict

    assert from_dict(_Outer, {"inner": {"n": 1}, "xs": [1, 2]}) == _Outer(_Inner(1), [1.0, 2.0])
    assert from_dict(_Outer, {"inner": "legacy", "xs": {"a": 1}}) == _Outer("legacy", {"a": 1})
    with pytest.raises(ValueError, match="`n`"):
        from_dict(_Outer, {"inner": {"n": -1}})
