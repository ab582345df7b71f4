"""The README and docs/ stay true to the repository: every relative link resolves, every `mkd` subcommand and flag
they show exists in the parser, the README stays short with its figure and verdict table on the first screen, and
no file carries a sentence that only makes sense on one machine or points at an issue number.

Fast and offline: reads files and builds the argparse parser, trains nothing. Each checker is also run on a small
string with a known fault, so a checker that finds nothing fails."""

from __future__ import annotations

import argparse
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from mkd.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
FIGURE = "paper_tables/cpu/fig_variants.png"
README_MAX_LINES = 250
FIRST_SCREEN = 80

FENCE = re.compile(r"^\s*(```|~~~)")
INLINE_CODE = re.compile(r"`([^`\n]+)`")
LINK = re.compile(r"!?\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
LINK_DEFINITION = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$")
EXTERNAL = re.compile(r"^(?:[a-z][a-z0-9+.-]*:|//)", re.I)  # http:, https:, mailto:, ...
# `mkd` where a command starts: a line or code span's start, or after && || ; | ( $( ; after env assignments,
# `exec`, or a path to a venv's bin/.
COMMAND = re.compile(r"(?:^|&&|\|\||[;|(]|\$\()[ \t]*(?:[A-Za-z_][A-Za-z0-9_]*=\S*[ \t]+)*(?:exec[ \t]+)?"
                     r"(?:\S*/bin/)?mkd(?=[ \t]|$)(?P<rest>[^\n;|&)#]*)", re.M)
FORBIDDEN = re.compile(r"this\s+workplace|\bissues?\s+#?\d+", re.I)


# ------------------------------------------------------------------------------------------------ markdown

def split_code(text: str) -> tuple[str, list[str]]:
    """(the prose with fenced blocks and inline code blanked, the code a reader would type). Code is one entry per
    fenced line (backslash continuations joined, shell comments dropped) and one per inline code span."""
    prose, code, fenced, pending = [], [], False, ""
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            prose.append("")
            continue
        if fenced:
            prose.append("")
            line = pending + line
            if line.rstrip().endswith("\\"):
                pending = line.rstrip()[:-1] + " "
                continue
            pending = ""
            code.append(re.sub(r"(^|\s)#.*$", "", line))
        else:
            code.extend(INLINE_CODE.findall(line))
            prose.append(INLINE_CODE.sub(lambda m: " " * len(m.group(0)), line))
    return "\n".join(prose), code


def relative_links(text: str) -> list[tuple[int, str]]:
    """(line number, target without #fragment) of every relative link or image outside code."""
    prose, _ = split_code(text)
    found = []
    for number, line in enumerate(prose.splitlines(), start=1):
        targets = LINK.findall(line)
        definition = LINK_DEFINITION.match(line)
        if definition:
            targets.append(definition.group(1))
        for target in targets:
            if EXTERNAL.match(target) or target.startswith("#"):
                continue
            found.append((number, target.split("#", 1)[0]))
    return found


def broken_links(page: Path, root: Path = ROOT) -> list[str]:
    problems = []
    for number, target in relative_links(page.read_text(encoding="utf-8")):
        resolved = (page.parent / target).resolve()
        inside = resolved == root.resolve() or root.resolve() in resolved.parents
        if not inside or not resolved.exists():
            problems.append(f"{page.name}:{number}: {target}")
    return problems


# ------------------------------------------------------------------------------------------- mkd commands

def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("the mkd parser has no subcommands")


def _lookup(name: str, table: dict[str, argparse.Action]) -> argparse.Action | None:
    """The action argparse would take `name` for: an option string, or an unambiguous prefix of one long option
    (argparse's allow_abbrev)."""
    if name in table:
        return table[name]
    prefixed = {id(a): a for o, a in table.items() if name.startswith("--") and o.startswith(name)}
    return next(iter(prefixed.values())) if len(prefixed) == 1 else None


def mkd_commands(code: list[str]) -> list[list[str]]:
    """The argument lists (after `mkd`) of every mkd command in the code."""
    commands = []
    for snippet in code:
        for m in COMMAND.finditer(snippet):
            rest = m.group("rest").strip()
            try:
                tokens = shlex.split(rest)
            except ValueError:
                tokens = rest.split()
            if tokens:
                commands.append(tokens)
    return commands


def command_problems(text: str, parser: argparse.ArgumentParser | None = None) -> tuple[int, list[str]]:
    """(how many mkd commands were checked, what in them the parser does not know). Top-level flags are valid
    anywhere; after a bare `--` the rest belongs to DVC; a placeholder (`<sub>`, `COMMAND`) is not checked."""
    parser = parser or build_parser()
    subs = _subparsers(parser)
    top = {o: a for a in parser._actions for o in a.option_strings}
    checked, problems = 0, []
    for tokens in mkd_commands(split_code(text)[1]):
        shown = "mkd " + " ".join(tokens)
        i = 0
        while i < len(tokens) and tokens[i].startswith("-") and tokens[i] != "--":  # options before the subcommand
            action = _lookup(tokens[i].split("=", 1)[0], top)
            if action is None:
                problems.append(f"{shown}: mkd has no option {tokens[i].split('=', 1)[0]}")
                break
            i += 2 if action.nargs != 0 and "=" not in tokens[i] else 1
        else:
            if i >= len(tokens) or tokens[i] == "--" or not re.fullmatch(r"[a-z][a-z0-9-]*", tokens[i]):
                continue  # no subcommand, or a placeholder (`mkd <sub>`)
            sub = tokens[i]
            checked += 1
            if sub not in subs:
                problems.append(f"{shown}: no subcommand {sub!r} (mkd has {', '.join(sorted(subs))})")
                continue
            options = {**top, **{o: a for a in subs[sub]._actions for o in a.option_strings}}
            for token in tokens[i + 1:]:
                if token == "--":
                    break  # the rest are DVC's arguments (mkd exp --profile cpu -- -S ...)
                if re.match(r"--?[A-Za-z]", token) and _lookup(token.split("=", 1)[0], options) is None:
                    problems.append(f"{shown}: `mkd {sub}` has no option {token.split('=', 1)[0]}")
    return checked, problems


# ------------------------------------------------------------------------------------------------- README

def readme_layout_problems(text: str) -> list[str]:
    lines = text.splitlines()
    problems = []
    if len(lines) > README_MAX_LINES:
        problems.append(f"README.md has {len(lines)} lines, more than {README_MAX_LINES}")
    figure = next((n for n, line in enumerate(lines, 1) if re.search(r"!\[[^\]]*\]\(" + re.escape(FIGURE), line)), None)
    if figure is None or figure > FIRST_SCREEN:
        problems.append(f"the figure {FIGURE} is not embedded within the first {FIRST_SCREEN} lines (line {figure})")
    header = next((n for n, line in enumerate(lines, 1) if re.match(r"\|\s*claim\s*\|", line)), None)
    if header is None:
        problems.append("no verdict table (a table whose header starts with '| claim |')")
        return problems
    end = header
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    rows = lines[header + 1:end]  # the body, below the separator
    claims = {m.group(1) for row in rows if (m := re.match(r"\|\s*(\d)", row))}
    if end > FIRST_SCREEN:
        problems.append(f"the verdict table runs to line {end}, past the first {FIRST_SCREEN}")
    if claims != {"1", "2", "3", "4", "5"} or not any("reproduced" in row for row in rows):
        problems.append(f"the verdict table does not give verdicts for claims 1-5 (rows for {sorted(claims)})")
    return problems


def forbidden_phrases(text: str) -> list[str]:
    return [m.group(0) for m in FORBIDDEN.finditer(text)]


def repository_files() -> list[Path]:
    """Files git tracks, and new ones it does not ignore, outside .git."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                             capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"not a git checkout ({exc})")
    return [ROOT / p for p in sorted(set(out.decode().split("\0"))) if p]


# ------------------------------------------------------------------------------------------- the checkers

def test_the_link_checker_finds_a_broken_link_and_image_and_nothing_else(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "there.md").write_text("x")
    page = tmp_path / "README.md"
    page.write_text("![fig](docs/missing.png)\nSee [there](docs/there.md#part), [gone](docs/gone.md), "
                    "[web](https://example.org/x), [top](#top), [out](../outside.md).\n"
                    "`[in code](not-checked.md)`\n```\n[fenced](not-checked-either.md)\n```\n[ref]: docs/nope.md\n")
    assert broken_links(page, root=tmp_path) == ["README.md:1: docs/missing.png", "README.md:2: docs/gone.md",
                                                 "README.md:2: ../outside.md", "README.md:7: docs/nope.md"]


def test_the_command_checker_finds_an_unknown_flag_and_subcommand_and_reads_commands_as_argparse_does():
    text = ("```bash\nmkd verify --cells 3 --celss 2   # a comment: mkd nonsense --x\n"
            "mkd fanout --profile paper --engine slurm \\\n   --max-parallel 16 --gpus-per-tsk 1\n"
            "mkd exp --profile cpu -- -S student.lr=1 --whatever\nMKD_GPUS=0 .venv/bin/mkd --threads 1 -q grid\n"
            "mkd --params p.yaml validate --stamp && mkd fanot --profile cpu\n```\n"
            "Prose naming the mkd command, `mkd <sub>`, `mkd exp --dry` and `mkd verify --threads 2`.\n"
            "A tree line in a block:\n```\ncli.py   the mkd command\n```\n")
    checked, problems = command_problems(text)
    assert checked == 8
    assert problems == [
        "mkd verify --cells 3 --celss 2: `mkd verify` has no option --celss",
        "mkd fanout --profile paper --engine slurm --max-parallel 16 --gpus-per-tsk 1: "
        "`mkd fanout` has no option --gpus-per-tsk",
        "mkd fanot --profile cpu: no subcommand 'fanot' (mkd has " + ", ".join(sorted(_subparsers(build_parser())))
        + ")",
    ]


def test_the_readme_layout_check_sees_a_long_readme_and_a_late_figure_and_table():
    table = ["| claim | a |", "|---|---|"] + [f"| {c} x | reproduced |" for c in range(1, 6)]
    good = ["# t", f"![f]({FIGURE})", *table, *["text"] * 100]
    assert readme_layout_problems("\n".join(good)) == []
    late = ["# t", *["text"] * 90, f"![f]({FIGURE})", *table]
    assert len(readme_layout_problems("\n".join(late))) == 2
    assert "lines, more than" in readme_layout_problems("\n".join(good + ["x"] * 300))[0]
    assert "claims 1-5" in readme_layout_problems("\n".join(good[:5] + good[8:]))[0]


def test_the_phrase_check_finds_a_workplace_and_issue_numbers_not_the_word_issue():
    assert forbidden_phrases("Measured on this Workplace's machine (Issue 25; see issue #7, issues 3 and 4).") == [
        "this Workplace", "Issue 25", "issue #7", "issues 3"]
    assert forbidden_phrases("A known issue: see the issue tracker. Claim 5 holds.") == []


# ----------------------------------------------------------------------------------------- the documents

def test_every_relative_link_and_image_in_the_readme_and_docs_resolves():
    assert len(PAGES) >= 9, "docs/ holds one page per topic"
    assert len(relative_links(README.read_text(encoding="utf-8"))) >= 10  # the checker sees the README's links
    problems = [p for page in PAGES for p in broken_links(page)]
    assert not problems, "links to nothing:\n" + "\n".join(problems)


def test_every_mkd_subcommand_and_flag_the_docs_show_exists():
    parser = build_parser()
    checked, problems = 0, []
    for page in PAGES:
        n, found = command_problems(page.read_text(encoding="utf-8"), parser)
        checked += n
        problems += [f"{page.name}: {p}" for p in found]
    assert checked >= 20, f"only {checked} mkd commands found in the docs: is the extractor broken?"
    assert not problems, "the docs show what mkd does not have:\n" + "\n".join(problems)


def test_the_readme_is_short_and_opens_with_the_figure_and_the_verdict_table():
    problems = readme_layout_problems(README.read_text(encoding="utf-8"))
    assert not problems, "\n".join(problems)


def test_no_file_names_this_workplace_or_an_issue_number():
    files = [f for f in repository_files() if f.resolve() != Path(__file__).resolve() and f.is_file()]
    assert README in files and len(files) > 50
    problems = []
    for path in files:
        data = path.read_bytes()
        if b"\0" in data[:8192]:
            continue  # binary (compressed predictions, images)
        text = data.decode("utf-8", errors="replace")
        for phrase in forbidden_phrases(text):
            line = text[:text.find(phrase)].count("\n") + 1
            problems.append(f"{path.relative_to(ROOT)}:{line}: {phrase!r}")
    assert not problems, "say which machine (e.g. '2 cores, Intel Xeon'), not an issue number:\n" + "\n".join(problems)
