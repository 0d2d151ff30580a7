"""The command line: help, thinness (no torch for cache-only commands), error messages."""

from __future__ import annotations

import subprocess
import sys

import pytest

from eebench.cli import build_parser, main

COMMANDS = ("zoo", "costs", "store", "data", "train", "sweep", "run", "report")


def test_help_lists_every_command_with_a_description(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for cmd in COMMANDS:
        assert f"    {cmd} " in out or f"    {cmd}\n" in out, cmd
    # every sub-command has a one-line description
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for action in sub._choices_actions:
        assert action.help, action.dest


def _modules_after(argv: list[str], tmp_path) -> set[str]:
    code = (
        "import sys\n"
        "from eebench.cli import main\n"
        f"rc = main({argv!r})\n"
        "print('MODULES', ' '.join(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('torch', 'timm', 'fvcore', 'ptflops'))))\n"
        "sys.exit(rc)\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert res.returncode == 0, res.stderr
    line = next(ln for ln in res.stdout.splitlines() if ln.startswith("MODULES"))
    return set(line.split()[1:])


def test_store_commands_do_not_import_torch(tmp_path) -> None:
    assert _modules_after(["store", "ls", "--store", str(tmp_path / "s")], tmp_path) == set()


def test_unknown_model_is_a_clear_error(capsys) -> None:
    rc = main(["costs", "msdnet_cifar100_budjet"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "unknown model" in err and "msdnet_cifar100_budget" in err


def test_import_curve_writes_a_published_csv_and_needs_the_unit(tmp_path, capsys) -> None:
    from eebench.report.published import load_published

    src = tmp_path / "dynamic.txt"
    src.write_text("75.1\t340000000.0\n77.2\t690000000.0\n")  # MSDNet's writer: acc<TAB>MACs
    out = tmp_path / "local" / "mynet.csv"
    assert main(["import-curve", str(src), "--dataset", "imagenet", "--out", str(out)]) == 2
    assert "cost unit" in capsys.readouterr().err
    assert main(["import-curve", str(src), "--dataset", "imagenet", "--cost-unit", "macs",
                 "--out", str(out)]) == 0
    df = load_published([str(out)])
    assert df["gmacs"].tolist() == pytest.approx([0.34, 0.69]) and df["top1"].tolist() == [75.1, 77.2]
    assert set(df["setting"]) == {"budgeted"} and (df["source"] == "mynet").all()


def test_user_errors_are_one_line_and_bugs_keep_their_traceback(monkeypatch, capsys) -> None:
    """An EebenchError (or an OS error) is the user's to fix: one line, exit 2. Any other
    exception is a bug in eebench: it propagates with its traceback, never dressed up as
    the user's mistake."""
    import eebench.cli as cli
    from eebench.errors import InputError

    def user_error(args):
        raise InputError("the option is wrong; give a number")

    def bug(args):
        return {}["a key the code forgot"]

    parser = cli.build_parser
    for fn, name in ((user_error, "user"), (bug, "bug")):
        def build(fn=fn):
            p = parser()
            p.set_defaults(func=fn)
            for action in p._subparsers._group_actions:  # every subcommand runs fn
                for sub in action.choices.values():
                    sub.set_defaults(func=fn)
            return p

        monkeypatch.setattr(cli, "build_parser", build)
        if name == "user":
            assert cli.main(["policies"]) == 2
            err = capsys.readouterr().err
            assert err == "eebench policies: error: the option is wrong; give a number\n"
        else:
            with pytest.raises(KeyError, match="a key the code forgot"):
                cli.main(["policies"])
