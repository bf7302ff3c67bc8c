"""`-m comment --comment TEXT` (libxt_comment.c): always matches; at most 255 characters."""

from __future__ import annotations

from typing import Final

from natbox.rules.api import XtContext
from natbox.rules.matches._common import quote_string
from natbox.rules.model import Match, MatchFn, Opt, Rule, RulesError
from natbox.skb import Skb

__all__ = ["Comment"]

XT_MAX_COMMENT_LEN: Final = 256  # including the NUL


class Comment(Match):
    name = "comment"
    shareable = True  # natbox.rules.model: nothing changes an instance after parse
    options = (Opt("comment", 1),)

    def __init__(self) -> None:
        self.comment: str | None = None

    def parse(self, opt: str, arg: str | None, inverted: bool, rule: Rule) -> None:
        if opt != "comment":
            super().parse(opt, arg, inverted, rule)
        text = arg or ""
        if len(text.encode()) >= XT_MAX_COMMENT_LEN:
            raise RulesError(f'comment: option "--comment" must be less than {XT_MAX_COMMENT_LEN} characters')
        self.comment = text

    def final_check(self, rule: Rule) -> None:
        if self.comment is None:
            raise RulesError('comment: option "--comment" must be specified\n')

    def save(self) -> str:
        return " --comment" + quote_string(self.comment or "")

    def print_list(self, numeric: bool) -> str:
        return f" /* {self.comment} */"

    def compile(self) -> MatchFn:
        def comment_mt(skb: Skb, ctx: XtContext) -> bool:
            return True

        return comment_mt
