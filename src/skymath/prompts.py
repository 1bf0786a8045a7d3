"""Prompts are data: Jinja templates under prompts/, rendered with StrictUndefined.

`sft_prompt` is the ONE prompt shared by SFT and evaluation, so the two cannot drift apart.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from skymath.errors import UserError
from skymath.paths import PROMPTS_DIR


@cache
def _env(root: str):
    import jinja2

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(root),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=False,
        autoescape=False,
    )


def render(name: str, prompts_dir: Path | None = None, **variables: Any) -> str:
    """Render prompts/<name>.jinja (trailing whitespace of the template is stripped)."""
    import jinja2

    root = str(prompts_dir or PROMPTS_DIR)
    try:
        tpl = _env(root).get_template(f"{name}.jinja")
    except jinja2.TemplateNotFound:
        raise UserError(f"{root}/{name}.jinja: prompt template not found") from None
    except jinja2.TemplateSyntaxError as e:
        raise UserError(f"{root}/{name}.jinja:{e.lineno}: template syntax error: {e.message}") from None
    try:
        return tpl.render(**variables).rstrip()
    except jinja2.UndefinedError as e:
        raise UserError(f"{root}/{name}.jinja: {e.message}") from None


def sft_prompt(problem: str, style: str = "alpaca", tokenizer: Any = None) -> str:
    """The query part shared by training and evaluation.

    style "alpaca": prompts/sft.jinja (the MetaMath/Skywork frame ending with
    "Let's think step by step."); style "chat": the model's own chat template (instruct models).
    """
    if style == "alpaca":
        return render("sft", problem=problem)
    if style == "chat":
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise UserError("prompt style 'chat' needs a tokenizer with a chat template")
        msgs = [{"role": "user", "content": f"{problem}\nLet's think step by step."}]
        return tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    raise UserError(f"unknown prompt style {style!r} (alpaca | chat)")


def sft_target(response: str) -> str:
    """The trained continuation after the prompt: a space, then the response."""
    return " " + response.strip()
