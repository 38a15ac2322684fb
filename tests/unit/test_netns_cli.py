"""The lab commands' argument handling and errors, without root or a lab."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from kubeplane.cli.lab import register
from kubeplane.netns import names, nsfs


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> typer.Typer:
    monkeypatch.setattr(names, "STATE_ROOT", tmp_path / "state")
    monkeypatch.setattr(nsfs, "NETNS_DIR", tmp_path / "netns")
    app = typer.Typer()
    register(app)
    return app


def _one_line_error(output: str) -> str:
    lines = output.strip().splitlines()
    assert len(lines) == 1, output
    assert lines[0].startswith("error: ")
    return lines[0]


def test_a_bad_lab_name_is_one_line_error(cli: typer.Typer) -> None:
    result = CliRunner().invoke(cli, ["lab", "down", "--name", "Not_Valid"])
    assert result.exit_code == 1
    assert "1-8 characters of [a-z0-9]" in _one_line_error(result.output)


def test_exec_and_curl_on_a_lab_that_is_not_up_say_so(cli: typer.Typer) -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["exec", "--lab", "nolab", "web", "--", "true"])
    assert result.exit_code == 1
    assert "lab nolab has no state" in _one_line_error(result.output)
    result = runner.invoke(cli, ["curl", "--lab", "nolab", "web", "http://10.0.0.1/"])
    assert result.exit_code == 1
    assert "is it up?" in _one_line_error(result.output)


def test_exec_without_a_command_is_refused(cli: typer.Typer) -> None:
    result = CliRunner().invoke(cli, ["exec", "web", "--"])
    assert result.exit_code == 1
    assert "no command given" in _one_line_error(result.output)


def test_list_and_down_with_nothing_there(cli: typer.Typer) -> None:
    runner = CliRunner()
    assert runner.invoke(cli, ["lab", "list"]).output == "no labs\n"
    result = runner.invoke(cli, ["lab", "down", "--name", "gone"])
    assert result.exit_code == 0
    assert "0 namespaces" in result.output
