"""docs/derivation.md: math that GitHub renders, functions that exist, figures that are there.

GitHub runs its Markdown pass over a page before MathJax sees the math, so the page keeps
to what survives it: display math as ``$$`` lines around one line of TeX, no backslash
before punctuation (Markdown eats it: ``\\\\`` and ``\\{`` lose their backslash), no ``*``
and no ``_`` right after ``}`` or ``)`` (either can start emphasis).
"""
import importlib
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGE = os.path.join(ROOT, "docs", "derivation.md")


@pytest.fixture(scope="module")
def page():
    with open(PAGE, encoding="utf-8") as f:
        return f.read()


def prose(text):
    """The page without fenced code blocks, HTML comments and code spans."""
    text = re.sub(r"^```.*?^```[ \t]*$", "", text, flags=re.S | re.M)
    text = re.sub(r"<!--.*?-->", "", text, flags=re.S)
    return re.sub(r"`[^`\n]*`", "", text)


def math_of(text):
    """(display, inline) TeX strings, after checking that every $$ block is well formed."""
    lines = prose(text).split("\n")
    display, rest = [], []
    i = 0
    while i < len(lines):
        if lines[i].strip().startswith("$$"):
            assert lines[i] == "$$", f"a $$ line must hold nothing else: {lines[i]!r}"
            assert i == 0 or lines[i - 1] == "", f"no blank line before the $$ block at {lines[i + 1]!r}"
            assert i + 2 < len(lines) and lines[i + 2] == "$$", \
                f"a display block is one line of TeX between two $$ lines: {lines[i + 1]!r}"
            assert lines[i + 1].strip() and lines[i + 3] == "", f"blank line missing after {lines[i + 1]!r}"
            display.append(lines[i + 1])
            i += 3
        else:
            rest.append(lines[i])
            i += 1
    inline = []
    for paragraph in "\n".join(rest).split("\n\n"):
        assert paragraph.count("$") % 2 == 0, f"unbalanced $ in: {paragraph[:200]!r}"
        inline += re.findall(r"\$([^$]+)\$", paragraph)
    return display, inline


def test_math_survives_githubs_markdown_pass(page):
    display, inline = math_of(page)
    assert len(display) >= 20 and len(inline) >= 100
    for tex in display + inline:
        assert not re.search(r"\\[!-/:-@\[-`{-~]", tex), f"backslash before punctuation: {tex!r}"
        assert "*" not in tex, f"use \\ast or \\odot, not *: {tex!r}"
        assert not re.search(r"[})\]]_", tex), f"_ after a closing bracket may start emphasis: {tex!r}"
        assert tex == tex.strip(), f"no space inside the $ delimiters: {tex!r}"
        assert tex.count("{") == tex.count("}"), f"unbalanced braces: {tex!r}"
        assert "\\begin" not in tex, f"one equation per block, no environments: {tex!r}"
    for tex in display:
        # a list item, heading, quote or setext underline would take the line out of the math
        assert not re.match(r"\s*([-+]\s|#+\s|>|\d+[.)]\s|[-=]+\s*$)", tex), \
            f"the line could be read as Markdown: {tex!r}"


def test_every_named_function_exists(page):
    names = set(re.findall(r"npvae/(\w+)\.py: (\w+)\.(\w+)", page))
    assert len(names) >= 12
    for module, cls, method in sorted(names):
        owner = getattr(importlib.import_module(f"npvae.{module}"), cls, None)
        assert owner is not None and callable(getattr(owner, method, None)), f"npvae/{module}.py: {cls}.{method}"


def test_reading_order_comes_first_and_the_figures_are_there(page):
    head = page[:page.index("## 0.")]
    order = ["this page", "npvae/layers.py", "npvae/sampler.py", "npvae/losses.py", "npvae/model.py",
             "npvae/optim.py", "gradcheck", "npvae/fast"]
    positions = [head.find(item) for item in order]
    assert -1 not in positions and positions == sorted(positions), dict(zip(order, positions))
    for name in ("kl_curve.png", "latent_bubbles.png"):
        assert f"](figures/{name})" in page
        with open(os.path.join(ROOT, "docs", "figures", name), "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n", name
