"""A reply's thinking apart from its answer: the `<think> ... </think>` block that reasoning models
(Qwen 3, QwQ, DeepSeek-R1 and its distillations) write before the answer.

llama.cpp's server returns that block as `message.reasoning_content` (streamed as
`delta.reasoning_content`) and the rest as `content`, by default (`--reasoning-format deepseek`);
`none` leaves it in the content, `deepseek-legacy` fills `reasoning_content` and keeps the tags in
the content too. This does the same, for templates that know the tags (`thinks`):

- the block counts only at the start of the reply (after white space); a reply that opens with
  anything else is all content, as is a `<think>` further on;
- a prompt that ends inside an opened block (a template whose generation prompt ends with
  `<think>`: DeepSeek-R1's) starts the reply in it;
- the white space after `</think>` is not content; a reply cut inside the block is all thinking.

`ThinkSplit` takes the reply a piece at a time, as it streams, holding back only what may still be
the start of a tag (and the white space before it). `deepseek-legacy`'s content is the reply as it
is (the route's concern).
"""
from __future__ import annotations

from typing import Optional

OPEN, CLOSE = "<think>", "</think>"
FORMATS = ("auto", "deepseek", "deepseek-legacy", "none")


def thinks(template_source: str) -> bool:
    """Whether a chat template knows the thinking tags (renders or strips them)."""
    return CLOSE in template_source or OPEN in template_source


def opens_thinking(prompt: str) -> Optional[str]:
    """Whether the prompt leaves a thinking block open for the reply: None, or the thinking it
    already holds ("" for a generation prompt that ends with `<think>`, DeepSeek-R1's; an
    assistant prefill's text that stops inside the block)."""
    at = prompt.rfind(OPEN)
    if at < 0 or prompt.rfind(CLOSE) > at:
        return None
    return prompt[at + len(OPEN):]


def _held(text: str, tag: str) -> int:
    """Characters at the end of text that may be the start of tag."""
    for k in range(min(len(tag) - 1, len(text)), 0, -1):
        if tag.startswith(text[-k:]):
            return k
    return 0


class ThinkSplit:
    """One reply's thinking and content as they stream: `feed(piece)` and then `finish()` each give
    the (thinking, content) text that is now certain. The thinking has no white space at its ends
    (the tags' lines), as llama.cpp's `reasoning_content`."""

    def __init__(self, opened: bool = False, begun: bool = False) -> None:
        self.state = "think" if opened else "start"  # start -> think -> after -> content
        self.buf = ""
        self.thought = opened  # a block was opened (by the prompt or the reply)
        self.begun = begun     # thinking text has come, maybe in the prompt (else its leading white space goes)

    def feed(self, piece: str) -> tuple[str, str]:
        self.buf += piece
        think, content = [], []
        while self.buf:
            if self.state == "start":  # white space, then <think> or the content
                stripped = self.buf.lstrip()
                if not stripped or (OPEN.startswith(stripped) and stripped != OPEN):
                    break  # maybe the tag's start
                if stripped.startswith(OPEN):
                    self.buf, self.state, self.thought = stripped[len(OPEN):], "think", True
                else:
                    self.state = "content"
            elif self.state == "think":
                if not self.begun:
                    self.buf = self.buf.lstrip()
                    if not self.buf:
                        break
                at = self.buf.find(CLOSE)
                if at >= 0:
                    think.append(self.buf[:at].rstrip())
                    self.buf, self.state = self.buf[at + len(CLOSE):], "after"
                    continue
                # held back: a tag's start, and the white space before it (the block's end, maybe)
                keep = _held(self.buf, CLOSE)
                out = self.buf[:len(self.buf) - keep]
                sure = out.rstrip()
                if sure:
                    self.begun = True
                think.append(sure)
                self.buf = self.buf[len(sure):]
                break
            elif self.state == "after":  # the white space after </think>
                self.buf = self.buf.lstrip()
                if self.buf:
                    self.state = "content"
            else:
                content.append(self.buf)
                self.buf = ""
        return "".join(think), "".join(content)

    def finish(self) -> tuple[str, str]:
        """What is held back at the end: a tag's start that stayed one is text of its part."""
        rest, self.buf = self.buf, ""
        if self.state == "think":
            return rest.rstrip(), ""
        if self.state == "after":
            return "", ""
        return "", rest


def split(text: str, opened: bool = False, begun: bool = False) -> tuple[Optional[str], str]:
    """A whole reply's thinking (None without a block, or an empty one) and content."""
    s = ThinkSplit(opened, begun)
    t1, c1 = s.feed(text)
    t2, c2 = s.finish()
    return (t1 + t2 if s.thought and (t1 + t2) else None), c1 + c2


class Thinking:
    """A request's way with its replies' thinking: what the prompt left open (`opened`, from
    opens_thinking), and deepseek-legacy (`legacy`: the content is the reply as it is, tags and
    thinking too, with the `<think>` the prompt opened)."""

    def __init__(self, opened: Optional[str] = None, legacy: bool = False) -> None:
        self.opened = opened is not None
        self.begun = bool(opened and opened.strip())
        self.legacy = legacy
        self.lead = OPEN + (opened or "") if legacy and opened is not None else ""

    def split(self, text: str) -> tuple[Optional[str], str]:
        thought, content = split(text, self.opened, self.begun)
        return thought, self.lead + text if self.legacy else content

    def stream(self) -> "ThinkStream":
        return ThinkStream(self)


class ThinkStream:
    """One streamed reply's (thinking, content) pieces (ThinkSplit's, the legacy content as it comes)."""

    def __init__(self, thinking: Thinking) -> None:
        self.legacy = thinking.legacy
        self.lead = thinking.lead  # (legacy: sent before the first piece)
        self.s = ThinkSplit(thinking.opened, thinking.begun)

    def feed(self, piece: str) -> tuple[str, str]:
        thought, content = self.s.feed(piece)
        if self.legacy:
            content, self.lead = self.lead + piece, ""
        return thought, content

    def finish(self) -> tuple[str, str]:
        thought, content = self.s.finish()
        return thought, "" if self.legacy else content
