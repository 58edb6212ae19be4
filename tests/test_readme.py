"""The README's Python blocks run as written (each in a fresh namespace, a few seconds of one core each)."""

import contextlib
import io
import re
from pathlib import Path

import pytest
import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[tuple[str, str]]:
    """(the heading above it, code) for every ```python block of the README."""
    text = README.read_text()
    blocks = []
    for match in re.finditer(r"```python\n(.*?)```", text, flags=re.S):
        prose = re.sub(r"```.*?```", "", text[: match.start()], flags=re.S)  # no comment lines of earlier blocks
        headings = re.findall(r"^#+ (.+)$", prose, flags=re.M)
        blocks.append((headings[-1] if headings else "top", match.group(1)))
    return blocks


BLOCKS = python_blocks()


def test_the_readme_has_an_example_per_capability():
    code = "\n".join(code for _, code in BLOCKS)
    for capability in ("pysens.sensitivity", "pysens.spde", "pysens.fokker_planck", "pysens.diffusion.adapters"):
        assert capability in code, capability


@pytest.mark.parametrize("heading, code", BLOCKS, ids=[f"{i}-{h}" for i, (h, _) in enumerate(BLOCKS)])
def test_readme_block_runs(heading, code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    with contextlib.redirect_stdout(io.StringIO()) as out:
        exec(compile(code, f"README.md ({heading})", "exec"), {"__name__": "__readme__"})
    printed = out.getvalue()
    # the outputs the README quotes
    if "sample_sensitivity" in code:
        assert "Success tensor([0.9934, 0.9934, 0.9934, 0.9934]" in printed
    if "siem(" in code:
        assert "bias 0.0: SIEM-B 2.41e-06" in printed and "bias 0.4: SIEM-B 1.10e-04" in printed
    if "log_fp_residual" in code:
        assert "max |R| of the exact log-density:" in printed
    if "EpsilonToScore" in code:
        assert printed.strip() == "Success"
