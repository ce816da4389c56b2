"""The command as a user types it."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

from click.testing import CliRunner

from mxguard.sim.cli import simulate

from .conftest import SMALL


def test_json_twice_gives_the_same_numbers_and_the_plot_is_svg(tmp_path: Path) -> None:
    scenario = tmp_path / "s.toml"
    scenario.write_text(SMALL, encoding="utf-8")
    plot = tmp_path / "t.svg"
    args = [str(scenario), "--layout", "recommended", "--layout", "classic", "--format", "json",
            "--jobs", "1"]  # fmt: skip
    first = CliRunner().invoke(simulate, [*args, "--plot", str(plot)])
    assert first.exit_code == 0, first.output
    second = CliRunner().invoke(simulate, args)
    assert json.loads(first.output) == json.loads(second.output)
    root = ET.fromstring(plot.read_text(encoding="utf-8"))
    assert root.tag.endswith("svg")
    assert "recommended" in plot.read_text(encoding="utf-8")


def test_table_output_names_layouts_and_mx_hosts(tmp_path: Path) -> None:
    scenario = tmp_path / "s.toml"
    scenario.write_text(SMALL, encoding="utf-8")
    r = CliRunner().invoke(simulate, [str(scenario), "--layout", "nolisting", "--jobs", "1"])
    assert r.exit_code == 0, r.output
    assert "fake0.example.test" in r.output and "bot_first_mx" in r.output


def test_bad_input_is_one_line_and_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[[senders]]\nbehaviour = "sendmail9"\n', encoding="utf-8")
    r = CliRunner().invoke(simulate, [str(bad)])
    assert r.exit_code == 2 and "senders[0].behaviour" in r.output
    r = CliRunner().invoke(simulate, ["--layout", "nope"])
    assert r.exit_code == 2 and "nope" in r.output
    r = CliRunner().invoke(simulate, ["--plot", str(tmp_path / "x.png")])
    assert r.exit_code == 2 and "SVG" in r.output
