"""minibam verify: check a BAM (or CBAM) written in PyTorch, from a Python file, against minibam's variants."""

from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

from minibam.cli._common import DTYPES, UsageError, int_at_least, say, shape_type


def load_module(target: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
    """Import FILE.py and call NAME(*args, **kwargs); UsageError (one line) for anything
    that does not give a torch module."""
    path_text, sep, name = target.rpartition(":")
    if not sep or not path_text or not name:
        raise UsageError(f"expected FILE.py:NAME, got {target!r}")
    path = Path(path_text)
    if path.is_dir():
        raise UsageError(f"{path_text}: a directory, not a Python file")
    if not path.is_file():
        raise UsageError(f"{path_text}: no such file")
    spec = importlib.util.spec_from_file_location(f"minibam_verify_user_{abs(hash(path.resolve()))}", path)
    if spec is None or spec.loader is None:
        raise UsageError(f"{path_text}: not an importable Python file")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.resolve().parent))  # so that it can import its neighbours
    try:
        spec.loader.exec_module(module)
    except BaseException as error:  # SyntaxError, ImportError, SystemExit, ...: all bad input
        first = (str(error).splitlines() or [""])[0]
        raise UsageError(f"{path_text} does not import: {type(error).__name__}: {first}") from None
    finally:
        sys.path.remove(str(path.resolve().parent))
    if not hasattr(module, name):
        raise UsageError(f"{path_text} has no {name!r}")
    factory = getattr(module, name)
    if not callable(factory):
        raise UsageError(f"{path_text}:{name} is a {type(factory).__name__}, not a class or a function")
    call = f"{name}({', '.join([*map(repr, args), *(f'{k}={v!r}' for k, v in kwargs.items())])})"
    try:
        built = factory(*args, **kwargs)
    except (Exception, SystemExit) as error:  # SystemExit: a factory that calls sys.exit
        raise UsageError(f"{call} raised {type(error).__name__}: {(str(error).splitlines() or [''])[0]}") from None
    if not (hasattr(built, "state_dict") and hasattr(built, "named_modules") and callable(built)):
        kind = type(built).__name__
        raise UsageError(f"{call} gave {'an' if kind[0] in 'AEIOUaeiou' else 'a'} {kind}, not a torch.nn.Module")
    return built


def _keyword(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value  # a plain string


def _key_map(text: str) -> dict[str, str]:
    try:
        data = json.loads(Path(text).read_text() if Path(text).is_file() else text)
    except (OSError, ValueError) as error:
        raise argparse.ArgumentTypeError(f"not a JSON object or a file holding one: {error}") from None
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise argparse.ArgumentTypeError("the key map must be a JSON object {their_name: minibam_name}")
    return data


def _in_cli_terms(message: str) -> str:
    """verify's messages name its Python arguments; say the options a CLI user types."""
    for python, cli in (("pass shapes=[(N, C, H, W)]", "pass --shape N,C,H,W (or --channels C)"),
                        ("dilation_val=", "--dilation "), ("key_map names", "--key-map names"),
                        ("shapes=", "--shape ")):
        message = message.replace(python, cli)
    return message


def run(args: argparse.Namespace) -> int:
    from minibam import verify

    try:
        import torch  # noqa: F401
    except ImportError:
        raise UsageError("minibam verify runs your PyTorch module, and torch is not installed") from None
    positional = [] if args.channels is None else [args.channels]
    module = load_module(args.target, positional, dict(args.kwarg or []))
    shapes = args.shape or None
    if shapes and args.channels is not None and any(s[1] != args.channels for s in shapes):
        raise UsageError(f"--shape must have C={args.channels} channels (--channels), got {shapes}")
    training = {"both": (True, False), "train": (True,), "eval": (False,)}[args.mode]
    check = getattr(verify, args.module)  # verify.bam or verify.cbam: the same arguments
    extra = {"dilation_val": args.dilation} if args.module == "bam" else {}
    try:
        report = check(module, variant=args.variant, shapes=shapes, training=training, dtype=args.dtype,
                       key_map=args.key_map, seed=args.seed, **extra)
    except (ValueError, TypeError) as error:
        raise UsageError(_in_cli_terms(str(error))) from None
    if args.json:
        say(json.dumps(report.to_dict()))
    else:
        say(report.render(None if args.verbose else 12, traceback=args.verbose))
    return 0 if report.passed else 1


def add_parser(commands: argparse._SubParsersAction) -> None:
    from minibam.verify.bam_variants import VARIANTS
    from minibam.verify.cbam import VARIANTS as CBAM_VARIANTS

    parser = commands.add_parser(
        "verify", help="check your own PyTorch BAM: which variant it is, and where it goes wrong",
        description="Import FILE.py, build NAME() (or NAME(C) with --channels C), and check the "
                    "module against every known BAM variant on a copy with random weights: "
                    "output, input gradient, every parameter gradient and the running buffers, "
                    "in training and eval mode, on a square and a non-square map. "
                    "Exit 0 pass, 1 fail, 2 bad input.",
    )
    parser.add_argument("target", metavar="FILE.py:NAME", help="a class or factory returning a torch.nn.Module")
    parser.add_argument("--channels", type=int_at_least(1), metavar="C", help="build NAME(C)")
    parser.add_argument("--kwarg", type=_keyword, action="append", metavar="KEY=VALUE",
                        help="also pass KEY=VALUE to NAME (a Python literal; repeatable)")
    parser.add_argument("--module", choices=("bam", "cbam"), default="bam",
                        help="what the module is: BAM (default) or CBAM")
    parser.add_argument("--variant", default="auto", metavar="NAME",
                        help=f"check only this variant (default: try all); BAM: {', '.join(VARIANTS)}; "
                             f"CBAM: {', '.join(CBAM_VARIANTS)}")
    parser.add_argument("--shape", type=shape_type("NCHW"), action="append", metavar="N,C,H,W",
                        help="an input shape (repeatable; default: a square and a non-square map)")
    parser.add_argument("--mode", choices=("both", "train", "eval"), default="both", help="default: both")
    parser.add_argument("--dtype", choices=DTYPES, default="float64", help="default: float64")
    parser.add_argument("--dilation", type=int_at_least(1), default=4, metavar="D",
                        help="dilation_val when the module does not say (default 4)")
    parser.add_argument("--key-map", type=_key_map, metavar="JSON",
                        help="place these layers by hand, overriding what the structure says: "
                             "their layer -> minibam's, as a JSON object or a .json file")
    parser.add_argument("--seed", type=int_at_least(0), default=0, help="default 0")
    parser.add_argument("--json", action="store_true", help="print report.to_dict() as one JSON object")
    parser.add_argument("--verbose", action="store_true", help="the full table (default: failed arrays only), and the traceback if the module raised")
    parser.set_defaults(run=run)
