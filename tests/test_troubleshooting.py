"""docs/troubleshooting.md lists every message the library can produce.

The messages are read from the source with `ast`, not by running anything:

- every `raise SomeError(<message>, ...)` in dmft/ whose message is a string constant, an
  f-string, or a `+` concatenation with at least one of those (a message that is only an
  expression, such as `raise DivergenceError(solution.status, ...)`, is skipped: it is one of
  the status strings below);
- every `warnings.warn(<message>, ...)`;
- the sentences of the `status` properties in dmft/results.py: the strings they return or
  assign, and those of the module's functions they call (such as `_at_initialisation`).

A message is split into its constant pieces, the literal text between placeholders. Every piece
that is at least 8 characters long, once stripped of surrounding whitespace and punctuation,
must appear verbatim on the page (runs of whitespace count as one space, so the page may wrap a
long message over lines). The page may write the placeholders as it likes (‹name›).
"""

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "dmft"
PAGE = ROOT / "docs" / "troubleshooting.md"

MIN_PIECE = 8
_PUNCTUATION = " \t\n,;:.-—"


@dataclass(frozen=True)
class Message:
    file: str  # relative to the repository root
    line: int
    parts: tuple  # str for literal text, ast.expr for a placeholder

    @property
    def template(self) -> str:
        return "".join(p if isinstance(p, str) else f"‹{ast.unparse(p)}›" for p in self.parts)

    @property
    def pieces(self) -> list:
        """The constant pieces the page must hold: normalised, at least MIN_PIECE characters."""
        out = []
        for part in self.parts:
            if isinstance(part, str):
                piece = _normalise(part).strip(_PUNCTUATION)
                if len(piece) >= MIN_PIECE:
                    out.append(piece)
        return out


def _normalise(text: str) -> str:
    return re.sub(r"\s+", " ", text)


def _is_str(node) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, str)


def _flatten(node) -> list | None:
    """The parts of a string expression (literal text and placeholders), or None if the
    expression holds no literal text."""
    if _is_str(node):
        return [node.value]
    if isinstance(node, ast.JoinedStr):
        # literal text is a Constant, a placeholder a FormattedValue around its expression
        return [value.value for value in node.values]
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _flatten(node.left), _flatten(node.right)
        if left is None and right is None:
            return None
        return (left if left is not None else [node.left]) + (
            right if right is not None else [node.right]
        )
    return None


def _merge(parts) -> tuple:
    """Adjacent literal parts joined ("a" + "b" is the message "ab")."""
    out = []
    for part in parts:
        if isinstance(part, str) and out and isinstance(out[-1], str):
            out[-1] += part
        else:
            out.append(part)
    return tuple(out)


def _message(path, node) -> Message | None:
    parts = _flatten(node)
    if parts is None or not any(isinstance(p, str) and p.strip() for p in parts):
        return None  # no literal text (or only blanks, like the "" of `x if c else ""`)
    return Message(path.relative_to(ROOT).as_posix(), node.lineno, _merge(parts))


def _string_values(node):
    """String expressions that a statement's value may take (both branches of `a if c else b`)."""
    if isinstance(node, ast.IfExp):
        yield from _string_values(node.body)
        yield from _string_values(node.orelse)
    elif _flatten(node) is not None:
        yield node


def _status_messages(path, tree):
    """Sentences of the `status` properties and of the module functions they call."""
    functions = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    todo = [
        item
        for cls in tree.body
        if isinstance(cls, ast.ClassDef)
        for item in cls.body
        if isinstance(item, ast.FunctionDef) and item.name == "status"
    ]
    seen = set()
    while todo:
        func = todo.pop()
        if id(func) in seen:
            continue
        seen.add(id(func))
        for node in ast.walk(func):
            if isinstance(node, ast.Return | ast.Assign) and node.value is not None:
                for value in _string_values(node.value):
                    message = _message(path, value)
                    if message is not None:
                        yield message
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in functions
            ):
                todo.append(functions[node.func.id])


def _is_warn(call) -> bool:
    func = call.func
    return (isinstance(func, ast.Attribute) and func.attr == "warn") or (
        isinstance(func, ast.Name) and func.id == "warn"
    )


def collect_messages() -> list:
    """Every message of dmft/, in file and line order."""
    messages = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            call = None
            if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
                call = node.exc
            elif isinstance(node, ast.Call) and _is_warn(node):
                call = node
            if call is not None and call.args:
                message = _message(path, call.args[0])
                if message is not None:
                    messages.append(message)
        if path.name == "results.py":
            messages.extend(_status_messages(path, tree))
    unique = {(m.file, m.line, m.template): m for m in messages}
    return [unique[key] for key in sorted(unique)]


def _page_text() -> str:
    return _normalise(PAGE.read_text(encoding="utf-8"))


def test_the_collector_finds_the_messages():
    messages = collect_messages()
    assert len(messages) >= 100, f"only {len(messages)} messages found in dmft/"
    templates = {m.file: [] for m in messages}
    for m in messages:
        templates[m.file].append(m.template)
    assert any("must be an int >= " in t for t in templates["dmft/settings.py"])
    assert any("do not match the digest" in t for t in templates["dmft/io.py"])
    assert any(t.startswith("not converged: ") for t in templates["dmft/results.py"])
    assert any("ignoring unreadable cache entry" in t for t in templates["dmft/cache.py"])
    assert templates.get("dmft/cli.py"), "the command line's messages are missing"


def test_every_message_is_on_the_troubleshooting_page():
    page = _page_text()
    missing = []
    for m in collect_messages():
        absent = [piece for piece in m.pieces if piece not in page]
        if absent:
            missing.append(f"{m.file}:{m.line}: {m.template}\n    not on the page: {absent}")
    if missing:
        pytest.fail(
            f"{len(missing)} messages are missing from docs/troubleshooting.md (add each with "
            "its cause and remedy):\n" + "\n".join(missing),
            pytrace=False,
        )


def test_the_page_is_in_the_nav():
    text = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    nav = text.split("\nnav:\n", 1)[1]
    assert re.search(r"^\s*- Troubleshooting: troubleshooting\.md\s*$", nav, flags=re.M), (
        "mkdocs.yml's nav needs the line `- Troubleshooting: troubleshooting.md`"
    )
