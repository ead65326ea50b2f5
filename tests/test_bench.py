"""The benchmark keeps working: its processes, its counters, and a smoke run of every scenario at tiny sizes.

Nothing here asserts a timing: the bench measures, these tests only prove it runs and counts correctly.

The smoke run of every scenario is ``python -m bench --smoke`` (``--quick`` at the smallest sizes, no settling
between runs: about 1.5 min on two cores, most of it starting Prefect servers and fresh processes). To smoke-test
at the ``--quick`` sizes instead (about 2 min alone, more in the suite)::

    ARCANOS_BENCH_QUICK=1 pytest tests/test_bench.py -p no:cacheprovider

The full bench is ``python -m bench`` (not part of the suite).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree

import openai
import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # bench/ is a folder of the repository, not part of the installed package
    sys.path.insert(0, str(ROOT))

from bench import _shapes  # noqa: E402
from bench._common import Bench, Row, fake_openai_process, print_table  # noqa: E402
from bench._fake_server import rpm_keyword  # noqa: E402

SCENARIO_TITLES = (
    "fan-out",
    "async fan-out",
    "client overhead",
    "typed answers",
    "OpenTelemetry spans",
    "Prefect cost per reasoning task",
    "ad-hoc `arcanos-flows run research`",
    "caching on",
    "requests/min",
    "step research flow",
)
# Read at import: the autouse fixture clears ARCANOS_* variables before each test.
SMOKE = "--quick" if os.environ.get("ARCANOS_BENCH_QUICK") else "--smoke"


def run_bench(*arguments: str, timeout: float) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "bench", *arguments],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def parse_svg(text: str) -> ElementTree.Element:
    return ElementTree.fromstring(text)  # noqa: S314 (an SVG the bench wrote in this test)


def ask(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(api_key=_shapes.API_KEY, base_url=base_url, max_retries=0)


def test_fake_server_process_counts_what_it_answered() -> None:
    """The bench's fake server, in its own process, counts the requests it answered and forgets them on reset."""
    with fake_openai_process(0.0) as server:
        client = ask(server.base_url)
        for _ in range(3):
            client.chat.completions.create(model=_shapes.MODEL, messages=[{"role": "user", "content": "hi"}])
        stats = server.stats()
        assert stats["completion_requests"] == 3
        assert stats["statuses"] == {"200": 3}
        assert stats["first_request_at"] <= stats["last_request_at"] <= stats["last_answer_at"]
        server.reset()
        assert server.stats()["requests"] == 0


@pytest.mark.skipif(rpm_keyword() is None, reason="the fake server has no rate-limit mode")
def test_fake_server_process_counts_429s_beyond_its_limit() -> None:
    """With a requests-per-minute limit, the answers beyond it are counted as 429s at the server."""
    with fake_openai_process(0.0, rpm=60) as server:
        client = ask(server.base_url)
        outcomes = []
        for _ in range(3):
            try:
                client.chat.completions.create(model=_shapes.MODEL, messages=[{"role": "user", "content": "hi"}])
                outcomes.append(200)
            except openai.RateLimitError:
                outcomes.append(429)
        stats = server.stats()
    assert outcomes.count(429) >= 1
    assert stats["statuses"].get("429", 0) == outcomes.count(429)
    assert stats["statuses"].get("200", 0) == outcomes.count(200)


def test_raw_async_worker_makes_the_research_requests() -> None:
    """A worker process runs the raw-SDK side: a plan, one request per question, a synthesis."""
    bench = Bench(quick=True, repeats=1)
    try:
        server = bench.fake_server(0.0)
        worker = bench.worker("raw", bench.arcanos_env(server.base_url, api_url=None))
        reply = worker.call("raw", topic="smoke", n=5, par=2, timeout=120)
        stats = server.stats()
    finally:
        bench.close()
    assert reply["seconds"] > 0
    assert stats["completion_requests"] == 5 + 2
    assert stats["statuses"] == {"200": 7}


def test_table_marks_missed_targets_and_missing_features(capsys: pytest.CaptureFixture[str]) -> None:
    """The table says yes, **NO** or n/a per row and lists each row's notes under it."""
    rows = [
        Row("a", "1 s", "2 s", "0.5x", "<= 1x", True, ["note a"]),
        Row("b", "3 s", "2 s", "1.5x", "<= 1x", False),
        Row.missing("c", "<= 1x", "no such feature"),
    ]
    print_table(rows, 3, quick=False, seconds=12, loads=("0.10 / 0.20 / 0.30", "0.40 / 0.50 / 0.60"))
    out = capsys.readouterr().out
    assert "| a | 1 s | 2 s | 0.5x | <= 1x | yes |" in out
    assert "| b | 3 s | 2 s | 1.5x | <= 1x | **NO** |" in out
    assert "| c | n/a (feature missing) |" in out
    assert "- a: note a" in out
    assert "- c: missing: no such feature" in out
    assert "0.10 / 0.20 / 0.30" in out


def test_quick_client_overhead_prints_its_row(tmp_path: Path) -> None:
    """`python -m bench --quick --only overhead` prints the table with the client-overhead row."""
    result = run_bench("--quick", "--only", "overhead", "--json", str(tmp_path / "rows.json"), timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| scenario | arcanos-flows | compared with | ratio | target | met |" in result.stdout
    rows = json.loads((tmp_path / "rows.json").read_text())
    assert [row["scenario"] for row in rows] == ["client overhead, 50 calls, 0 ms latency"]
    assert rows[0]["met"] in (True, False)
    # The figures the chart draws are the ones the row quotes, measured in the same run.
    (ours,) = rows[0]["values"].values()
    label, raw = rows[0]["baseline"]
    assert label == "raw OpenAI SDK"
    assert rows[0]["unit"] == "ms/call"
    assert f"{ours:.3f} ms/call" == rows[0]["measured"]
    assert f"raw SDK {raw:.3f} ms/call" == rows[0]["compared"]


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_quick_bench_runs_every_scenario(tmp_path: Path) -> None:
    """`python -m bench --smoke` (``--quick``) measures every scenario at tiny sizes without a bench error."""
    chart_file = tmp_path / "bench.svg"
    result = run_bench(SMOKE, "--json", str(tmp_path / "rows.json"), "--chart", str(chart_file), timeout=1400)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    rows = json.loads((tmp_path / "rows.json").read_text())
    titles = [row["scenario"] for row in rows]
    for title in SCENARIO_TITLES:
        assert any(title in scenario for scenario in titles), (title, titles)
    assert not [row for row in rows if row["measured"] == "n/a (bench error)"], rows
    for row in rows:  # each scenario's row is printed in the table
        assert f"| {row['scenario']} | {row['measured']} |" in result.stdout, row["scenario"]
    # The chart draws one group per row with figures, with the ratio the figures give.
    svg = parse_svg(chart_file.read_text())
    titles_drawn = [text.text for text in svg.iter("{http://www.w3.org/2000/svg}text") if text.get("class") == "title"]
    drawn = [row for row in rows if row.get("values") and row.get("baseline")]
    assert titles_drawn == [row["scenario"] for row in drawn]
    assert len(drawn) >= 5
    labels = "".join(svg.itertext())
    for row in drawn:
        (first, value), base = next(iter(row["values"].items())), row["baseline"][1]
        assert first in labels, labels
        assert f"({value / base:.2f}x)" in labels, (first, labels)


def test_chart_draws_each_row_with_figures_and_leaves_out_the_rest(tmp_path: Path) -> None:
    """`python -m bench.chart` reads --json rows and draws bars whose lengths follow the ratios."""
    rows = [
        {"scenario": "fan-out", "values": {"ours": 6.0, "naive": 4.5}, "baseline": ["raw", 3.0], "unit": "s"},
        {"scenario": "feature missing", "values": {}, "baseline": None, "unit": ""},
    ]
    (tmp_path / "rows.json").write_text(json.dumps(rows))
    result = subprocess.run(
        [sys.executable, "-m", "bench.chart", str(tmp_path / "rows.json"), "--out", str(tmp_path / "c.svg")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    svg = parse_svg((tmp_path / "c.svg").read_text())
    bars = [
        float(rect.get("width", 0))
        for rect in svg.iter("{http://www.w3.org/2000/svg}rect")
        if rect.get("fill") != "#fff"
    ]
    assert len(bars) == 3
    assert bars[1] == pytest.approx(2 * bars[0], rel=0.01)
    assert bars[2] == pytest.approx(1.5 * bars[0], rel=0.01)
    text = "".join(svg.itertext())
    assert "(2.00x)" in text
    assert "(1.50x)" in text
    assert "feature missing" not in text
    (tmp_path / "none.json").write_text(json.dumps(rows[1:]))
    result = subprocess.run(
        [sys.executable, "-m", "bench.chart", str(tmp_path / "none.json"), "--out", str(tmp_path / "n.svg")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode != 0
    assert "no row carries figures" in result.stderr
