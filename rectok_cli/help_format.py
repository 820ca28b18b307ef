"""``--help`` layout: plain click help whose text wraps at spaces only.

Typer's rich option tables cut long option names and choice lists with "…" at 80 columns, and click's own wrapper
breaks words at hyphens and splits long words, so ``--head-heads`` or a choice such as ``dinov3-s`` could come out
in two pieces. Here every option name, flag and choice stays whole on one line (a word longer than the column
overflows it rather than being split).
"""
from __future__ import annotations

import re
import textwrap
from collections.abc import Iterable

from typer.core import TyperGroup

# The click classes typer runs with (recent typer versions carry their own copy of click).
_Context = TyperGroup.context_class


class _Wrapper(textwrap.TextWrapper):
    """Breaks lines at spaces and after the ``|`` of a choice list ``{a|b|c}``; never inside a word."""

    wordsep_simple_re = re.compile(r"(\s+|(?<=\|))")

    def __init__(self, width: int, **kw) -> None:
        super().__init__(max(width, 10), break_on_hyphens=False, break_long_words=False, **kw)


class HelpFormatter(_Context.formatter_class):
    def write_dl(self, rows: Iterable[tuple[str, str]], col_max: int = 30, col_spacing: int = 2) -> None:
        rows = [tuple(r) + ("",) * (2 - len(r)) for r in rows]
        first_col = min(max((len(r[0]) for r in rows), default=0), col_max) + col_spacing
        wrapper = _Wrapper(self.width - first_col - 2)
        pad = " " * (self.current_indent + first_col)
        for term, text in rows:
            self.write(" " * self.current_indent + term)
            if not text:
                self.write("\n")
                continue
            self.write(" " * (first_col - len(term)) if len(term) <= first_col - col_spacing else "\n" + pad)
            lines = [line for para in text.split("\n\n") for line in (wrapper.wrap(para) or [""])]
            self.write(lines[0] + "\n" + "".join(pad + line + "\n" for line in lines[1:]))

    def write_text(self, text: str) -> None:
        indent = " " * self.current_indent
        wrapper = _Wrapper(self.width - self.current_indent, initial_indent=indent, subsequent_indent=indent)
        paras = [p for p in text.split("\n\n") if p.strip()]
        self.write("\n\n".join(wrapper.fill(" ".join(p.split())) for p in paras) + "\n")


class HelpContext(_Context):
    formatter_class = HelpFormatter


class HelpGroup(TyperGroup):
    """The app's group: it and every command it runs format ``--help`` with :class:`HelpFormatter`."""

    context_class = HelpContext

    def get_command(self, ctx: _Context, cmd_name: str):  # noqa: ANN201 - typer's click Command
        cmd = super().get_command(ctx, cmd_name)
        if cmd is not None:
            cmd.context_class = HelpContext
        return cmd
