import subprocess
import sys

from stcrank.commands.data import SUBCOMMANDS, _function, _summary


def test_summaries_are_the_first_docstring_lines():
    for target in SUBCOMMANDS.values():
        assert _summary(target) == _function(target).__doc__.strip().splitlines()[0]


def test_listing_the_subcommands_imports_none_of_them():
    code = (
        "import sys, contextlib, io; from stcrank.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()): main(['data', '--help'])\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch' or m.startswith('stcrank.simulation')))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "[]"
