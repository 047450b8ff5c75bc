"""What every command shares: the `--params FILE` / `-S KEY=VALUE` options and loading params.yaml through them."""
from __future__ import annotations


def with_params(sp) -> None:
    """Add `--params` and `-S/--set` to a subcommand's parser."""
    sp.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    sp.add_argument("-S", "--set", action="append", metavar="KEY=VALUE",
                    help="override a params.yaml value, DVC-style (e.g. -S methods.mult.lr=1e-3)")


def load_params(args):
    """The typed params of `--params` with the `-S` overrides applied; the whole file is validated (methods too)."""
    from ..methods import load_params as load
    return load(args.params, getattr(args, "set", None) or [])
