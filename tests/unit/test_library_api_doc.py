"""Runs the example in the README's "Library API" section as a doctest."""

from __future__ import annotations

import doctest
import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "README.md"


def test_library_api_example_runs() -> None:
    text = DOC.read_text(encoding="utf-8").split("## Library API", 1)[1]
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "the Library API section must carry a runnable example"
    parser = doctest.DocTestParser()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for i, block in enumerate(blocks):
        test = parser.get_doctest(block, {}, f"README.md Library API[{i}]", str(DOC), 0)
        assert test.examples, f"block {i} has no >>> examples"
        runner.run(test)
    results = runner.summarize(verbose=False)
    assert results.failed == 0, f"{results.failed} doctest example(s) failed in {DOC}"
