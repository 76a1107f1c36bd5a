"""``addk-interp heads --scan FILE``: apply the head-set selectors to a saved recovery scan.

Step of the method: docs/method.md §4.2–4.4 (significant set, main set, weak rule), on a scan in
the released JSON format (ours or the original authors'). Cost: milliseconds.
"""

from __future__ import annotations

import json

from addk_interp.core.heads import head_str


def add_parser(sub) -> None:
    sp = sub.add_parser("heads", help="main / minor heads from a saved recovery scan")
    sp.add_argument("--scan", required=True, help="recovery scan JSON")
    sp.add_argument("--json", action="store_true", help="print the selections as JSON")
    sp.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from addk_interp.core.errors import AddkError
    from addk_interp.localize.selectors import load_scan_json, select_from_scan

    if not Path(args.scan).is_file():
        raise AddkError(f"scan file not found: {args.scan}")
    try:
        scan = load_scan_json(args.scan)
    except (ValueError, FileNotFoundError) as e:
        raise AddkError(str(e)) from None
    res = select_from_scan(scan)
    if args.json:
        print(json.dumps(res, indent=1))
        return 0
    print(f"verdict: {res['verdict']}   bar: {res['bar']:.4f}")
    for key, decision in sorted(
        res["decisions"].items(), key=lambda kv: -res["gains"].get(kv[0], 0.0)
    ):
        print(f"  {head_str(key)}: gain {res['gains'][key]:+.4f}  {decision}")
    print("weak-rule main:", ", ".join(f"L{a}H{b}" for a, b in res["weak_rule_main"]))
    return 0
