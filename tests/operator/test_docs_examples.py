"""The docs are tested: every shell example (a ```sh block) in README.md, docs/*.md and
examples/testnet/README.md runs here, in order, against a real daemon, or is marked
illustrative with its reason.

Markup, read by sybil (https://sybil.readthedocs.io):

- ```` ```sh ```` block: runs in bash (``set -e -o pipefail``) in a directory laid out
  like a fresh clone after `make run`, inside a network namespace of its own (the
  documented ports are free there), while ``qssh-sidecar serve`` runs on its embedded
  defaults; every command must exit 0 and print no traceback, and each ``# => TEXT``
  line in the block is output the block must print (stdout or stderr).
- ``<!-- skip: next "why" -->`` before a block: illustrative; the reason is required.
- ``<!-- docs-test: daemon stop -->`` / ``<!-- docs-test: daemon start -->``: stop or
  start that daemon before the next examples (e.g. before the testnet, which takes the
  same ports, or before offline `wal` commands).

Other engineers edit these pages: a block is run or skipped by its own markup only, so a
new example is either made to pass or marked, never silently ignored.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from unittest import SkipTest

import pytest
from sybil import Document, Example, Region, Sybil
from sybil.parsers.markdown import CodeBlockParser, SkipParser
from sybil.parsers.markdown.lexers import DirectiveInHTMLCommentLexer

from tests.operator.docs_sandbox import Sandbox, namespaces_available
from tests.subprocesses import REPO

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")),
        REPO / "examples" / "testnet" / "README.md"]  # fmt: skip
SANDBOX = "sandbox"
SANDBOX_DIR = "sandbox_dir"


def _sandbox(example: Example) -> Sandbox:
    ns = example.namespace
    if SANDBOX not in ns:
        ns[SANDBOX] = Sandbox(ns[SANDBOX_DIR])
        ns[SANDBOX].start_daemon()
    sandbox: Sandbox = ns[SANDBOX]
    return sandbox


def run_sh(example: Example) -> None:
    source = str(example.parsed)
    result = _sandbox(example).run(source)
    where = f"{Path(example.path).name}:{example.line}"
    assert result.returncode == 0, (
        f"{where}: exit {result.returncode}\n$ {source}\n{result.stdout[-3000:]}"
        f"\n{result.stderr[-3000:]}"
    )
    printed = result.stdout + result.stderr
    assert "Traceback" not in printed, f"{where}\n{result.stderr}"
    for expected in re.findall(r"^# => (.+)$", source, re.MULTILINE):
        assert expected in printed, f"{where}: no {expected!r} in\n{printed[-3000:]}"


def apply_directive(example: Example) -> None:
    words = str(example.parsed).split()
    if words == ["daemon", "stop"]:
        _sandbox(example).stop_daemon()
    elif words == ["daemon", "start"]:
        _sandbox(example).start_daemon()
    else:
        raise ValueError(f"unknown docs-test directive {example.parsed!r}")


class DocsTestParser:
    def __init__(self) -> None:
        self.lexer = DirectiveInHTMLCommentLexer(directive="docs-test")

    def __call__(self, document: Document) -> Iterable[Region]:
        for lexed in self.lexer(document):
            yield Region(lexed.start, lexed.end, lexed.lexemes["arguments"], apply_directive)


SYBIL = Sybil(
    parsers=[SkipParser(), DocsTestParser(), CodeBlockParser(language="sh", evaluator=run_sh)]
)


def shell_examples(path: Path) -> list[tuple[int, str | None]]:
    """Each sh block's line and its skip reason (None: it runs), without running any."""
    text = path.read_text()
    out = []
    for m in re.finditer(r"^```sh\n", text, re.MULTILINE):
        line = text.count("\n", 0, m.start()) + 1
        before = text[: m.start()].rstrip("\n").rsplit("\n", 1)[-1]
        skip = re.fullmatch(r'<!-- skip: next "(.+)" -->', before)
        out.append((line, skip.group(1) if skip else None))
    return out


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_shell_examples_run_against_a_real_daemon(doc: Path) -> None:
    runnable = [line for line, reason in shell_examples(doc) if reason is None]
    if not runnable:
        pytest.skip("no runnable shell example on this page")
    why_not = namespaces_available()
    if why_not is not None:
        pytest.skip(why_not)
    document = SYBIL.parse(doc)
    # short: the testnet's node sockets live under it (AF_UNIX paths are short)
    clone = Path(tempfile.mkdtemp(prefix="qdoc"))
    document.namespace[SANDBOX_DIR] = clone / "c"
    ran: list[int] = []
    try:
        for example in document:
            is_shell = example.region.evaluator is run_sh
            try:
                example.evaluate()
            except SkipTest:
                continue
            if is_shell:
                ran.append(example.line)
    finally:
        sandbox: Any = document.namespace.get(SANDBOX)
        if sandbox is not None:
            sandbox.close()
        shutil.rmtree(clone, ignore_errors=True)
    assert ran == runnable


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_an_illustrative_example_says_why(doc: Path) -> None:
    text = doc.read_text()
    for m in re.finditer(r"^<!-- skip: next(.*?)-->", text, re.MULTILINE):
        assert re.fullmatch(r' "[^"]{12,}" ', m.group(1)), f"{doc.name}: {m.group(0)}"


COMMAND = re.compile(r"^(\$ |qssh-sidecar |qssh-queue |\.venv/bin/|make |python |curl |examples/)")


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_shell_command_block_is_marked_sh(doc: Path) -> None:
    """A block of commands without the ``sh`` tag would escape this harness."""
    text = doc.read_text()
    for m in re.finditer(r"^```(\w*)\n(.*?)^```$", text, re.MULTILINE | re.DOTALL):
        language, body = m.group(1), m.group(2)
        first = next((ln for ln in body.splitlines() if ln.strip()), "")
        if language in ("", "console", "bash", "shell") and COMMAND.match(first):
            line = text.count("\n", 0, m.start()) + 1
            raise AssertionError(f"{doc.name}:{line}: shell commands in a ```{language} block")


def test_report() -> None:
    """What the harness covers (printed with -s; counted in the issue)."""
    total_run = total_skipped = 0
    for doc in DOCS:
        for line, reason in shell_examples(doc):
            where = f"{doc.relative_to(REPO)}:{line}"
            if reason is None:
                total_run += 1
                print(f"run          {where}")
            else:
                total_skipped += 1
                print(f"illustrative {where}: {reason}")
    print(f"{total_run} shell examples run, {total_skipped} illustrative")
    assert total_run > 0


def readme_first_run_sample() -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text[text.index("## First run") :]
    block = re.search(r"^```\n(.*?)^```$", section, re.MULTILINE | re.DOTALL)
    assert block is not None
    return block.group(1).splitlines()


def sample_line_pattern(line: str) -> re.Pattern[str]:
    """A README sample line as a pattern: any time, any fingerprint, any checkout path."""
    rx = re.escape(re.sub(r"ready in [\d.]+s$", "ready in SECONDS", line))
    rx = rx.replace("SECONDS", r"[\d.]+s")
    rx = re.sub(r"\d{4}\\-\d\d\\-\d\dT\d\d:\d\d:\d\d\\.\d{3}Z", r"\\S+", rx)
    rx = rx.replace(re.escape("SHA256:…"), r"SHA256:\S+")
    # `make run` in a checkout prints .venv/bin/qssh-queue; the sandbox's .venv is a link
    # to the venv running these tests (whatever its name), whose scripts' shebang names
    # its interpreter, so the daemon there prints that venv's full path
    rx = rx.replace(re.escape("  .venv/bin/"), r"\ \ \S*/bin/")
    return re.compile(rx + "$")


def test_readme_first_run_output_is_what_make_run_prints(tmp_path: Path) -> None:
    """The README's sample of the first start, line by line (`…` skips lines), against
    a real first start on the embedded defaults, in order."""
    why_not = namespaces_available()
    if why_not is not None:
        pytest.skip(why_not)
    sandbox = Sandbox(tmp_path / "c")
    try:
        sandbox.start_daemon()
        lines = sandbox.raw_output().splitlines()
    finally:
        sandbox.close()
    at = 0
    for sample in readme_first_run_sample():
        if sample == "…":
            continue
        pattern = sample_line_pattern(sample)
        while at < len(lines) and not pattern.match(lines[at]):
            at += 1
        assert at < len(lines), f"README line not printed (in this order): {sample}\n" + "\n".join(
            lines
        )
        at += 1
