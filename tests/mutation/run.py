"""`make mutation`: mutation testing of the token codec, the spool, ingest and the settling statement.

    python -m tests.mutation.run [--max-children N] [--no-sql | --sql-only] [MUTANT ...]

Starts one embedded PostgreSQL with a migrated template database (each pytest session clones it: see
tests/mutation/plugin.py), then

- runs mutmut on links/token.py, edge/spool.py and collector/ingest.py (configured in pyproject.toml,
  [tool.mutmut]); mutmut runs each mutant against the tests that call the mutated function, among the ones
  listed there;
- puts each of tests/mutation/sql_mutants.py's mutants into the settling statement (collector/settle.py) in
  turn and runs the ingest tests (SQL_TESTS) against it;
- type-checks each surviving mutmut mutant with mypy (strict, as `make lint` does), which could not be
  committed if mypy rejects it: those are counted apart, never as killed;
- prints killed / survived / timeout / total and the score per target, and the survivors.

A full run starts from nothing (mutmut keeps verdicts between runs and would not retest a survivor after a
new test). MUTANT names or globs (as `mutmut results` prints them) retest only those, keeping the rest.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import libcst
from mutmut.mutation import diff_apply
from mutmut.utils.format_utils import orig_function_and_class_names_from_key

from clickedge.pgembed import EmbeddedPostgres, free_port
from collector.schema import migrate_dsn
from tests.mutation import sql_mutants
from tests.mutation.plugin import SQL_MUTANT_ENV, TEMPLATE_ENV

ROOT = Path(__file__).resolve().parents[2]
MUTMUT_TARGETS = (("token", "links/token.py"), ("spool", "edge/spool.py"), ("ingest (Python)", "collector/ingest.py"))
# The tests that write batches through ingest and settling and look at what it derived (the quickest
# first: pytest -x stops at the first failure).
SQL_TESTS = (
    "tests/collector/test_ingest_statement.py",
    "tests/collector/test_ingest.py",
    "tests/collector/test_reports.py",
    "tests/collector/test_actions.py",
    "tests/collector/test_clock_and_partitions.py",
    "tests/test_privacy.py",
)
SQL_TIMEOUT_S = 900
# mutmut's exit codes, by what they mean for the score (mutmut/stats.py); anything else is "other".
KILLED = {1, 3}
SURVIVED = {0}
TIMEOUT = {36, -24, 24, 152, 255}
NO_TESTS = {5, 33}


@dataclass
class Score:
    killed: list[str] = field(default_factory=list)
    survived: list[str] = field(default_factory=list)
    typed_out: list[str] = field(default_factory=list)  # survived the tests; mypy --strict rejects them
    timeout: list[str] = field(default_factory=list)
    no_tests: list[str] = field(default_factory=list)
    other: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        kinds = (self.killed, self.survived, self.typed_out, self.timeout, self.no_tests, self.other)
        return sum(len(names) for names in kinds)

    @property
    def percent(self) -> float:
        # A timeout is a detected mutant: the tests did not pass.
        return 100.0 * (len(self.killed) + len(self.timeout)) / self.total if self.total else 0.0

    def add(self, name: str, exit_code: int | None) -> None:
        if exit_code in KILLED:
            self.killed.append(name)
        elif exit_code in SURVIVED:
            self.survived.append(name)
        elif exit_code in TIMEOUT:
            self.timeout.append(name)
        elif exit_code in NO_TESTS:
            self.no_tests.append(name)
        else:
            self.other.append(f"{name} (exit {exit_code})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mutants", nargs="*", help="retest only these mutmut mutants (names or globs)")
    parser.add_argument("--max-children", type=int, default=2, help="mutants run side by side (default 2)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--no-sql", action="store_true", help="skip the SQL mutants of the settling statement")
    which.add_argument("--sql-only", action="store_true", help="run only the SQL mutants")
    args = parser.parse_args(argv)
    os.chdir(ROOT)  # mutmut reads pyproject.toml and mutants/ from the working directory

    root = Path(tempfile.mkdtemp(prefix="clickedge-mutation-"))
    pg = EmbeddedPostgres(root / "pg", free_port())
    pg.init()
    asyncio.run(pg.start())
    try:
        asyncio.run(migrate_dsn(pg.dsn))  # the template: no connection to it stays open
        env = {**os.environ, TEMPLATE_ENV: pg.dsn}
        env.pop("CLICKEDGE_DATABASE_URL", None)
        scores: dict[str, Score] = {}
        if not args.sql_only:
            code = run_mutmut(env, args.mutants, args.max_children)
            if code != 0:
                print(f"mutmut failed (exit {code})", file=sys.stderr)
                return code
            scores.update(read_mutmut_scores())
            for score in scores.values():
                separate_what_mypy_rejects(score)
        if not args.no_sql:
            sql = run_sql_mutants(env)
            if sql is None:
                return 1
            scores["ingest (SQL)"] = sql
    finally:
        pg.stop()
        shutil.rmtree(root, ignore_errors=True)
    report(scores)
    return 0


def run_mutmut(env: dict[str, str], names: list[str], max_children: int) -> int:
    if not names:
        shutil.rmtree(ROOT / "mutants", ignore_errors=True)
    mutmut = Path(sys.executable).with_name("mutmut")
    command = [str(mutmut), "run", "--max-children", str(max_children), *names]
    return subprocess.run(command, cwd=ROOT, env=env, check=False).returncode


def read_mutmut_scores() -> dict[str, Score]:
    scores = {}
    for target, path in MUTMUT_TARGETS:
        meta = json.loads((ROOT / "mutants" / f"{path}.meta").read_text())
        score = Score()
        for name, exit_code in sorted(meta["exit_code_by_key"].items()):
            score.add(name, exit_code)
        scores[target] = score
    return scores


def separate_what_mypy_rejects(score: Score) -> None:
    mypy = Path(sys.executable).with_name("mypy")
    with tempfile.TemporaryDirectory(prefix="clickedge-mutant-") as scratch:
        for name in list(score.survived):
            path, code = mutated_source(name)
            shadow = Path(scratch) / "mutant.py"
            shadow.write_text(code)
            checked = subprocess.run(
                [str(mypy), "--shadow-file", path, str(shadow), path], cwd=ROOT, capture_output=True, check=False
            )
            if checked.returncode == 1:
                score.survived.remove(name)
                score.typed_out.append(name)


def mutated_source(name: str) -> tuple[str, str]:
    """The file ``name`` mutates, and its text with that one mutant in it (what `mutmut apply` would write)."""
    path = str(diff_apply.find_mutant(name).path)
    function, cls = orig_function_and_class_names_from_key(name)
    module = diff_apply.read_orig_module(path)
    original = _find_function(module, function, cls)
    pair = diff_apply.read_functions_from_index(name, path)
    mutant = pair[1] if pair else diff_apply.read_mutant_function(diff_apply.read_mutants_module(path), name)
    mutated = module.deep_replace(original, mutant.with_changes(name=libcst.Name(function)))
    assert isinstance(mutated, libcst.Module)
    return path, mutated.code


def _find_function(module: libcst.Module, name: str, cls: str | None) -> libcst.FunctionDef:
    # Not mutmut's find_top_level_function_or_method: it takes the first method of that name in any class
    # (TokenError.__init__ for TokenCodec.__init__).
    body: Sequence[libcst.CSTNode] = module.body
    if cls is not None:
        owner = next(c for c in module.body if isinstance(c, libcst.ClassDef) and c.name.value == cls)
        assert isinstance(owner.body, libcst.IndentedBlock)
        body = owner.body.body
    return next(f for f in body if isinstance(f, libcst.FunctionDef) and f.name.value == name)


def run_sql_mutants(env: dict[str, str]) -> Score | None:
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "tests.mutation.plugin", "-p", "no:cacheprovider"]
    clean = _pytest(command, env)
    if clean != 0:
        print(f"the ingest tests fail without a mutant (exit {clean}): no SQL mutant can be judged", file=sys.stderr)
        return None
    score = Score()
    for mutant in sql_mutants.MUTANTS:
        started = time.monotonic()
        code = _pytest(command, {**env, SQL_MUTANT_ENV: mutant.name})
        score.add(mutant.name, 36 if code is None else code)
        print(f"  SQL mutant {mutant.name}: exit {code} in {time.monotonic() - started:.0f}s", flush=True)
    return score


def _pytest(command: list[str], env: dict[str, str]) -> int | None:
    try:
        result = subprocess.run(
            [*command, *SQL_TESTS], cwd=ROOT, env=env, capture_output=True, timeout=SQL_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:
        return None
    if result.returncode not in (0, 1):
        sys.stdout.write(result.stdout.decode(errors="replace")[-3000:])
    return result.returncode


def report(scores: dict[str, Score]) -> None:
    print()
    print(
        f"{'target':<18}{'killed':>8}{'timeout':>9}{'survived':>10}{'(mypy rejects)':>16}{'no tests':>10}"
        f"{'other':>7}{'total':>7}  score"
    )
    for target, s in scores.items():
        print(
            f"{target:<18}{len(s.killed):>8}{len(s.timeout):>9}{len(s.survived) + len(s.typed_out):>10}"
            f"{len(s.typed_out):>16}{len(s.no_tests):>10}{len(s.other):>7}{s.total:>7}  {s.percent:5.1f}%"
        )
    print("score: (killed + timeout) / total. `mutmut show NAME` prints a mutmut mutant's diff.")
    for target, s in scores.items():
        for title, names in (
            ("survived", s.survived),
            ("survived the tests, rejected by mypy --strict", s.typed_out),
            ("not run (no test calls the function)", s.no_tests),
            ("other", s.other),
        ):
            if names:
                print(f"\n{target}: {title} ({len(names)})")
                for name in names:
                    print(f"  {name}")
    summary = {target: dataclasses.asdict(s) for target, s in scores.items()}
    (ROOT / "mutants").mkdir(exist_ok=True)
    (ROOT / "mutants" / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    sys.exit(main())
