"""`duollm report` rebuilds every figure from the saved files of a hand-made run (no model).
Run: pytest tests/analysis/test_report.py"""

import ast
import json
import subprocess
import sys
from pathlib import Path

from duollm.analysis.commands import budget_list
from duollm.analysis.table import usage_ks
from duollm.cli import main

from .conftest import write_oracle

ORACLE = ["ppl-big-small.png", "ppl-big-skip.png", "usage-big-small.png", "skip-map.png", "routes-seq0.png"]
ALL = [*ORACLE, "routers-usage.png", "routers-spread.png", "routers-seq0.png", "difficulty.png"]


def report(capsys, run):
    code = main(["report", "--run", str(run), "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out)


def test_report_writes_page_and_figures(run_dir, capsys):
    res = report(capsys, run_dir)
    folder = run_dir / "report"
    assert res == {"report": str(folder / "report.html"), "figures": ALL}
    assert sorted(p.name for p in folder.iterdir()) == sorted([*ALL, "report.html"])
    assert all((folder / f).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for f in ALL)
    page = (folder / "report.html").read_text()
    for f in ALL:
        assert f'src="{f}"' in page
    assert "k used: 1, 2, 3 BIG layers of 4" in page
    assert "3&gt;1" in page and "&lt;ran&gt;" in page and "<ran>" not in page  # escaped labels and token text
    assert "duollm oracle --run" in page and "--budgets &#x27;0-4,free,3&gt;1&#x27;" in page
    assert "duollm difficulty --run" in page and "duollm report --run" in page
    assert "duollm router train --run" in page and "duollm router eval --run" in page
    assert "synthetic-val" in page and 'class="note"' not in page
    report(capsys, run_dir)  # again: the new folder replaces the old one
    assert sorted(p.name for p in run_dir.iterdir()) == ["oracle", "report", "routers"]


def test_missing_data_leaves_notes(tmp_path, capsys):
    run = tmp_path / "run"
    write_oracle(run, "big,skip", modes=("shared",))
    res = report(capsys, run)
    assert res["figures"] == ["ppl-big-skip.png", "skip-map.png"]
    page = Path(res["report"]).read_text()
    assert page.count("no big,small oracle: run `duollm oracle --run RUN --options big,small`") == 2
    assert "no difficulty:" in page


def test_report_without_routers(tmp_path, capsys):
    run = tmp_path / "run"
    write_oracle(run, "big,small")
    res = report(capsys, run)
    assert res["figures"] == [*ORACLE[:1], *ORACLE[2:3], *ORACLE[4:], "difficulty.png"]
    page = Path(res["report"]).read_text()
    assert "<h2>Learned routers</h2>" in page and "no routers: train one with `duollm router train --run RUN" in page
    assert "routers: none" in page and "duollm router" not in page.split("<pre>")[1].split("</pre>")[0]


def test_report_follows_difficulty_settings(run_dir, capsys):
    assert main(["difficulty", "--run", str(run_dir), "--budget", "2", "--top", "2"]) == 0
    capsys.readouterr()
    page = Path(report(capsys, run_dir)["report"]).read_text()
    assert "Oracle shared/2 of big,small" in page and "duollm difficulty --run" in page and "--budget 2 --top 2" in page
    assert "Top 2 tokens by D_rel" in page


def test_report_without_oracle_is_one_line(tmp_path, capsys):
    assert main(["report", "--run", str(tmp_path)]) == 2
    out, err = capsys.readouterr()
    assert len(err.strip().splitlines()) == 1 and "duollm oracle --run" in err
    assert not (tmp_path / "report").exists()


def test_helpers():
    assert usage_ks(12) == [4, 6, 8] and usage_ks(4) == [1, 2, 3] and usage_ks(2) == [1] and usage_ks(1) == []
    assert budget_list(["0", "1", "2", "free", "6>2", "4", "6", "7"]) == "0-2,free,6>2,4,6-7"


def test_analysis_reads_files_only():
    for f in (Path(__file__).resolve().parents[2] / "duollm" / "analysis").glob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            assert not any(n.split(".")[0] == "torch" for n in names), f"{f.name} imports torch"
    code = "import sys, duollm.analysis.report, duollm.analysis.difficulty; print('matplotlib' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


def test_exit_code_is_2(tmp_path):
    r = subprocess.run([sys.executable, "-m", "duollm", "difficulty", "--run", str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 2 and r.stdout == "" and len(r.stderr.strip().splitlines()) == 1 and "duollm oracle --run" in r.stderr


def test_oracle_command_rebuilds_the_flags_of_a_summary():
    """The command shown beside an oracle's results names the budgets that had the causal oracle and random
    best-of-N when those were a subset, and the windows' pick."""
    from duollm.analysis.commands import oracle_command

    rows = [{"k": k, "ppl_oracle_shared": 1.0, "ppl_random_best": 2.0 if k in (4, 6) else None} for k in range(13)]
    for r in rows[1:4]:
        r["ppl_oracle_causal"] = 1.0
    s = {"options": "big,small", "mode": "causal", "budgets": rows, "random": 100, "seqs": 256, "pick": "spread", "split": "prose-val"}
    cmd = oracle_command("runs/r", s)
    assert "--budgets 0-12 --mode causal --causal-budgets 1-3 --random-budgets 4,6" in cmd
    assert "--random 100 --seqs 256 --pick spread --split prose-val" in cmd
    for r in rows:
        r.update(ppl_oracle_causal=1.0, ppl_random_best=2.0)
    s["pick"] = "first"
    cmd = oracle_command("runs/r", s)
    assert "--causal-budgets" not in cmd and "--random-budgets" not in cmd and "--pick" not in cmd


def test_label_free_points_on_the_oracles_windows(tmp_path, capsys):
    import pytest

    from duollm.analysis.report import label_free_points
    from duollm.errors import DuoError

    run = tmp_path / "run"
    write_oracle(run, "big,small")
    s = json.loads((run / "oracle" / "big-small" / "summary.json").read_text())
    same = {"split": "synthetic-val", "seqs": 2, "seq_len": 7, "pick": "first", "dtype": "fp32"}
    rows = [
        {**same, "k": 2, "ppl_label_free": 40.0},
        {**same, "k": 1, "seqs": 3, "ppl_label_free": 41.0},  # other windows
        {**same, "k": 3, "dtype": "bf16", "ppl_label_free": 42.0},  # other precision
    ]
    (run / "label-free-synthetic-val.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert label_free_points(str(run), s) == [{"x": 2, "ppl": 40.0, "kind": "label-free", "name": "label-free"}]
    assert label_free_points(str(run), {**s, "options": "big,skip"}) == []
    page = Path(report(capsys, run)["report"]).read_text()
    assert "The label-free choice takes, per token, the route" in page
    (run / "label-free-synthetic-val.jsonl").write_text("[study label-free] 2 s\n")
    with pytest.raises(DuoError, match="not a label-free result"):
        label_free_points(str(run), s)
