"""`discopop losses` through the Typer app: table, JSON, PNG plot and its overwrite rules."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import json
import sys

import pytest
from typer.testing import CliRunner

from discopop_cli import cli
from discopop_cli.losses import list_losses

PAPER_LOSSES = ("discopop", "padll", "cell", "pfl", "aql", "aqfl", "dbaql")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

runner = CliRunner()


def invoke(*args):
    return runner.invoke(cli.app, ["losses", *args], env={"COLUMNS": "200"})


def test_table_lists_every_loss():
    result = invoke()
    assert result.exit_code == 0, result.output
    for name in (*PAPER_LOSSES, "lrml", "Log-Ratio Modulated Loss", "discopop_tau=0.05"):
        assert name in result.stdout
    assert {spec.name for spec in list_losses()} <= set(result.stdout.replace("│", " ").split())


def test_json_parses_and_has_every_name():
    result = invoke("--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [row["name"] for row in rows] == [spec.name for spec in list_losses()]
    assert set(PAPER_LOSSES) <= {row["name"] for row in rows}
    by_name = {row["name"]: row for row in rows}
    assert set(by_name["discopop"]) == {"name", "aliases", "long_name", "formula", "params"}
    assert by_name["discopop"]["aliases"] == ["lrml"]
    assert by_name["aqfl"]["params"] == {"discopop_tau": 0.05}
    assert by_name["cell"]["formula"] == "L = 0.5 * exp(-x) + 0.5 * (-log sig(x))"


def test_plot_writes_png_and_respects_force(tmp_path):
    target = tmp_path / "new" / "dir" / "losses.png"
    result = invoke("--plot", str(target))
    assert result.exit_code == 0, result.output
    assert str(target) in result.stdout.replace("\n", "")
    data = target.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 20_000
    assert sorted(p.name for p in target.parent.iterdir()) == ["losses.png"]  # no temp file left behind

    refused = invoke("--plot", str(target), "discopop")
    assert refused.exit_code != 0
    assert refused.exit_code == 2 and "--force" in refused.output
    assert target.read_bytes() == data

    replaced = invoke("--plot", str(target), "--force", "discopop", "lrml", "cell")
    assert replaced.exit_code == 0, replaced.output
    new = target.read_bytes()
    assert new.startswith(PNG_MAGIC) and new != data
    assert sorted(p.name for p in target.parent.iterdir()) == ["losses.png"]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--plot", "PLACEHOLDER.png", "discopo"], "did you mean `discopop`"),
        (["--plot", "PLACEHOLDER.png", "aqffl"], "did you mean `aqfl`"),
        (["discopop"], "only apply with --plot"),
        (["--plot", "PLACEHOLDER.jpg"], "must end in .png"),
        (["--plot", "PLACEHOLDER.png", "--json"], "separate modes"),
    ],
)
def test_bad_input_exits_nonzero_with_the_fix(tmp_path, args, needle):
    args = [a.replace("PLACEHOLDER", str(tmp_path / "p")) for a in args]
    result = invoke(*args)
    assert result.exit_code != 0
    assert result.exit_code == 2
    assert needle in result.output
    assert not list(tmp_path.iterdir())


def test_main_prints_one_line_error_with_suggestion(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(sys, "argv", ["discopop", "losses", "--plot", str(tmp_path / "p.png"), "discopo"])
    monkeypatch.setenv("COLUMNS", "400")
    with pytest.raises(SystemExit) as info:
        cli.main()
    assert info.value.code != 0
    err = capsys.readouterr().err
    assert "unknown loss `discopo`" in err and "did you mean `discopop`" in err
    assert err.strip().count("\n") == 0
