"""``ocdl tableau NAME|--file F [--json]``: a tableau, its partner and its orders."""

from __future__ import annotations

import json

from ocdl import tableau as tab
from ocdl.errors import OcdlError


def register(sub):
    p = sub.add_parser("tableau", help="show a Butcher tableau, its symplectic partner and orders")
    p.add_argument("name", nargs="?", help=f"registry name ({', '.join(tab.names())})")
    p.add_argument("--file", help="a user tableau (TOML or JSON with A, b, optional c and name); an inconsistent "
                                  "one (Σ b_i ≠ 1) is shown too, for study")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--list", action="store_true", help="list the registry")
    p.set_defaults(func=run)


def run(args) -> int:
    if args.list:
        rows = [tab.get(n).to_dict() for n in tab.names()]
        if args.json:
            print(json.dumps(rows))
        else:
            print(f"{'name':<10} {'s':>2} {'ode':>4} {'oc':>4}  partner")
            for r in rows:
                oc = "-" if r["oc_order"] is None else r["oc_order"]
                print(f"{r['name']:<10} {len(r['b']):>2} {r['ode_order']:>4} {oc:>4}  {'yes' if r['partner_A'] else 'no (some b_i = 0)'}")
        return 0
    if bool(args.name) == bool(args.file):
        raise OcdlError("give a tableau name or --file FILE (exactly one)")
    t = tab.load(args.file) if args.file else tab.get(args.name)
    d = t.to_dict()
    if args.json:
        print(json.dumps(d))
        return 0
    print(f"tableau {t.name}: {t.s} stages, {'explicit' if t.explicit else 'implicit'}")
    print(t)
    print(f"ODE order: {d['ode_order']} (conditions checked up to 4)")
    if not t.consistent:
        print(f"inconsistent: Σ b_i = {t.b_sum:.12g}, not 1, so the layers approximate no ODE; training and "
              "`ocdl verify` refuse it unless --allow-inconsistent")
    print(f"order in optimal control (Hager): {d['oc_order'] if d['oc_order'] is not None else 'n/a (needs all b_i > 0)'}")
    if d["partner_A"] is None:
        print("symplectic partner: does not exist (some b_i = 0); the adjoint uses the unscaled form")
    else:
        print("symplectic partner Ã (ã_il = b_l − b_l a_li / b_i):")
        for row in d["partner_A"]:
            print("  " + " ".join(f"{x:>9.6g}" for x in row))
        print(f"max |b_i ã_il + b_l a_li − b_i b_l| = {t.partner_residual():.2e}")
    return 0
