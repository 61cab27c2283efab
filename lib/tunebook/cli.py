"""``tunebook`` command line: run the notebooks headlessly, list runs, fetch bundled models, stop a teacher."""

from __future__ import annotations

import argparse
import sys


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tunebook", description="Docs → QA data → LoRA fine-tune → eval/export, as notebooks.")
    sub = p.add_subparsers(dest="cmd", required=True)

    r = sub.add_parser("run", help="execute notebooks 01→05 headlessly into outputs/<run-id>/")
    r.add_argument("--profile", help="profile name in params/ (cpu, gpu, ci) or a path to your own YAML")
    r.add_argument("--corpus", help="folder of Markdown docs (overrides the profile's corpus)")
    r.add_argument("--run-id", help="run directory name under outputs/ (default: timestamp-profile); an existing "
                                    "one continues from its first unfinished step")
    r.add_argument("--from", dest="start", metavar="NN", help="first step to run (01..05)")
    r.add_argument("--to", dest="end", metavar="NN", help="last step to run (01..05)")
    r.add_argument("-p", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting, e.g. -p train.epochs=1 (repeatable)")
    r.add_argument("--quiet", action="store_true", help="don't echo notebook output")

    sub.add_parser("list", help="list runs under outputs/")

    m = sub.add_parser("models", help="list bundled models, or fetch them into the cache (offline from any hub)")
    m.add_argument("--fetch", nargs="*", metavar="NAME", help="fetch these bundled models (no names: all)")
    m.add_argument("--hf", action="store_true", help="also dequantize the fetched GGUFs into cached HF directories")

    s = sub.add_parser("stop", help="stop the teacher server a run started")
    s.add_argument("--run-id", required=True)

    k = sub.add_parser("keys", help="list every valid settings key")
    k.add_argument("--defaults", action="store_true", help="with default values")
    return p


def _cmd_run(args: argparse.Namespace) -> int:
    from .runner import run

    return run(args.profile, args.overrides, corpus=args.corpus, run_id=args.run_id, start=args.start,
               end=args.end, log_output=not args.quiet)


def _cmd_list(args: argparse.Namespace) -> int:  # noqa: ARG001
    from .runner import list_runs

    runs = list_runs()
    if not runs:
        print("no runs yet: try `tunebook run --profile ci`")
    for r in runs:
        print(f"{r['run_id']:<32} {str(r['profile']):<8} {r['steps']}")
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from . import models

    if args.fetch is None:
        for b in models.BUNDLED.values():
            print(f"{b.name:<30} {b.size_mb:>5} MB  {b.languages:<6} {b.upstream}  [{b.license}]  {b.notes}")
        return 0
    for name in args.fetch or list(models.BUNDLED):
        if name not in models.BUNDLED:
            print(f"unknown bundled model '{name}'; known: {', '.join(models.BUNDLED)}", file=sys.stderr)
            return 2
        path = models.bundled_gguf(name)
        print(f"{name}: {path}")
        if args.hf:
            print(f"  hf: {models.dequantized_dir(path)}")
    return 0


def _cmd_stop(args: argparse.Namespace) -> int:
    from . import serve
    from .paths import OUTPUTS_DIR

    print("stopped" if serve.stop_all(OUTPUTS_DIR / args.run_id) else "no running server for that run")
    return 0


def _cmd_keys(args: argparse.Namespace) -> int:
    from . import settings as st

    defaults = st.Settings().model_dump()
    for key in st.valid_keys():
        if args.defaults:
            sec, _, name = key.partition(".")
            val = defaults[sec][name] if name else defaults[sec]
            print(f"{key} = {val!r}")
        else:
            print(key)
    return 0


COMMANDS = {"run": _cmd_run, "list": _cmd_list, "models": _cmd_models, "stop": _cmd_stop, "keys": _cmd_keys}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from .settings import SettingsError

    try:
        return COMMANDS[args.cmd](args)
    except SettingsError as e:
        print(f"tunebook: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # clear one-line errors for expected failures
        from .models import ModelError
        from .runner import RunError
        from .serve import ServeError

        if isinstance(e, (ModelError, RunError, ServeError, FileNotFoundError)):
            print(f"tunebook: {e}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
