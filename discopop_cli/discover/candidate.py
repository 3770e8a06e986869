"""A proposed loss: where it came from, what its author said about it, and its source as offered.

Nothing here runs the source: it is parsed (`ast.parse` only builds a tree) to find the one function, to hash
the code independently of comments, docstrings and the function's name, and to write its formula as one line.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import json
import re
from dataclasses import dataclass

# The largest source accepted at all; the paper's losses are a few hundred characters.
MAX_SOURCE_CHARS = 8000

_FENCE = re.compile(r"```(?:python|py)?\s*\n(.*?)```", re.DOTALL)


@dataclass
class Candidate:
    """One proposal. `origin` says where it came from (a file name, or the proposer and generation)."""

    code: str
    origin: str
    thought: str = ""
    name: str = ""


def from_reply(text: str, origin: str) -> Candidate:
    """A model's reply: the JSON object asked for ({"thought", "name", "code"}), else a fenced code block."""
    stripped = text.strip()
    start, end = stripped.find("{"), stripped.rfind("}")
    if start != -1 and end > start:
        try:
            data = json.loads(stripped[start : end + 1])
        except ValueError:
            data = None
        if isinstance(data, dict) and isinstance(data.get("code"), str):
            return Candidate(
                code=data["code"],
                origin=origin,
                thought=str(data.get("thought", ""))[:2000],
                name=str(data.get("name", ""))[:80],
            )
    fenced = _FENCE.search(text)
    code = fenced.group(1) if fenced else text
    thought = text[: fenced.start()].strip()[:2000] if fenced else ""
    return Candidate(code=code, origin=origin, thought=thought)


def from_file(source: str, file_name: str) -> Candidate:
    """A dropped `.py` file: its module docstring, if it parses, is the thought."""
    thought = ""
    with contextlib.suppress(SyntaxError, ValueError):
        thought = ast.get_docstring(ast.parse(source)) or ""
    return Candidate(code=source, origin=file_name, thought=thought[:2000])


def the_function(tree: ast.Module) -> ast.FunctionDef | None:
    functions = [node for node in tree.body if isinstance(node, ast.FunctionDef)]
    return functions[0] if len(functions) == 1 else None


def code_hash(code: str) -> str:
    """sha256 of the parsed code without docstrings and with the function renamed: reformatting, comments or a
    new name do not make a new candidate. Source that does not parse is hashed as text."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return hashlib.sha256(code.encode("utf-8", "replace")).hexdigest()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(node, ast.Module | ast.FunctionDef)
            and isinstance(body, list)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            node.body = body[1:] or [ast.Pass()]
        if isinstance(node, ast.FunctionDef):
            node.name = "loss"
    return hashlib.sha256(ast.dump(tree).encode()).hexdigest()


def function_name(code: str) -> str:
    try:
        function = the_function(ast.parse(code))
    except (SyntaxError, ValueError):
        return ""
    return function.name if function else ""


def formula(code: str) -> str:
    """The function body's statements, unparsed and joined by '; ' (docstring left out): the formula as code."""
    function = the_function(ast.parse(code))
    if function is None:
        return ""
    lines = []
    for statement in function.body:
        if isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant):
            continue
        if isinstance(statement, ast.Return) and statement.value is not None:
            lines.append(f"L = {ast.unparse(statement.value)}")
        else:
            lines.append(" ".join(ast.unparse(statement).split()))
    return "; ".join(lines)
