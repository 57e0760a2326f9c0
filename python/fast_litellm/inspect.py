"""fl-shm-inspect: a read-only look at a live region (header, table, workers, top keys)."""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

from ._config import OFF_VALUES
from ._native import RegionError, RegionView


def snapshot(view: RegionView, top: int) -> Dict[str, Any]:
    return {"header": view.header(), "stats": view.stats(), "workers": view.workers(), "top_keys": view.top_keys(top)}


def _mib(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"


def render(path: str, snap: Dict[str, Any]) -> str:
    h, s = snap["header"], snap["stats"]
    created = datetime.datetime.fromtimestamp(h["created_unix_s"], datetime.timezone.utc)
    workers: List[Dict[str, Any]] = snap["workers"]
    live = sum(1 for w in workers if w["status"] == "live")
    dead = sum(1 for w in workers if w["status"] != "live")
    out = [
        f"region {path}",
        f"  magic {h['magic']}  layout v{h['layout_version']}  slot {h['slot_size']} B  header {h['header_size']} B"
        f"  worker entry {h['worker_size']} B",
        f"  size {_mib(h['total_size'])}  capacity {h['capacity']}  max workers {h['max_workers']}",
        f"  created {created:%Y-%m-%d %H:%M:%S} UTC  boot {h['boot_id'][:8]}"
        + ("" if h["this_boot"] else "  (clock values from another boot: reset on next attach)"),
        "table",
        f"  used {s['used']}  expired {s['expired']}  free-after-use {s['dead']}  load factor {s['load_factor']:.2%}",
        f"  inserts {s['inserts']}  reclaimed {s['reclaimed']}  full events {s['full_events']}  max probe {s['max_probe']}",
        f"workers  {live} live, {dead} dead or being reaped, {s['reaped_workers']} reaped so far",
    ]
    if workers:
        out.append(f"  {'pid':>8}  {'status':<8} {'registered':>11}  {'slots held':>10}  {'keys':>5}")
        for w in workers:
            out.append(
                f"  {w['pid']:>8}  {w['status']:<8} {w['registered_s_ago']:>9.0f}s  {w['slots_held']:>10}  {w['keys_held']:>5}"
            )
    keys = snap["top_keys"]
    out.append(f"top {len(keys)} keys by count")
    out.extend(_key_table(keys))
    return "\n".join(out)


def _key_table(keys: List[Dict[str, Any]], full_text: Optional[str] = None) -> List[str]:
    """One line per entry. A key longer than the slot keeps shows as head…tail; the
    fingerprint (its first 16 hex digits here, all 32 in --json) tells such keys apart."""
    if not keys:
        return []
    out = [f"  {'kind':<7} {'count':>10} {'window':>8} {'resets in':>10}  {'holders (pid:slots)':<22} "
           f"{'fingerprint':<16}  key"]
    for k in keys:
        timed = k["kind"] != "slots"
        holders = " ".join(f"{pid}:{n}" for pid, n in k["holders"]) or "-"
        # A counter with no window is one that never expires (LiteLLM's ttl=None).
        window = f"{k['window_s']:g}s" if timed and k["window_s"] > 0 else "-"
        resets = "expired" if k["expired"] else (f"{k['resets_in_s']:.1f}s" if timed and k["resets_in_s"] > 0 else "-")
        name = full_text if full_text is not None else k["key"]
        out.append(f"  {k['kind']:<7} {k['count']:>10} {window:>8} {resets:>10}  {holders:<22} "
                   f"{k['fingerprint'][:16]}  {name}")
    return out


def _show_key(view: RegionView, path: str, key: str, as_json: bool) -> int:
    entries = view.lookup(key)
    if as_json:
        print(json.dumps({"key": key, "entries": entries}, indent=2))
    elif entries:
        print(f"key {key!r} in {path}: {len(entries)} live entr{'y' if len(entries) == 1 else 'ies'}")
        print("\n".join(_key_table(entries, full_text=key)))
    else:
        print(f"key {key!r}: no live entry in {path}")
    return 0 if entries else 1


def main(argv: Optional[Sequence[str]] = None, default_path: str = "") -> int:
    parser = argparse.ArgumentParser(
        prog="fl-shm-inspect",
        description="Show a fast_litellm shared region without changing it.",
    )
    parser.add_argument("path", nargs="?", default=default_path or None,
                        help="region file (default: $FAST_LITELLM_SHM)")
    parser.add_argument("--top", type=int, default=20, metavar="N", help="keys to list (default 20)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--watch", type=float, metavar="SECONDS", help="refresh every SECONDS until Ctrl-C")
    parser.add_argument("--key", metavar="TEXT",
                        help="show the entries of one key, given its full text (exit 1 when it has none)")
    args = parser.parse_args(argv)
    if not args.path or args.path.lower() in OFF_VALUES:
        print("fl-shm-inspect: no region given: pass a path or set FAST_LITELLM_SHM", file=sys.stderr)
        return 2
    if args.top < 0:
        parser.error("--top takes a whole number of keys, 0 or more")
    if args.watch is not None and not (math.isfinite(args.watch) and args.watch > 0):
        parser.error("--watch takes a positive, finite number of seconds")
    if os.path.islink(args.path):
        print(f"fl-shm-inspect: {args.path} is a symbolic link; regions are opened without following links: "
              f"give the path of the file itself ({os.path.realpath(args.path)})", file=sys.stderr)
        return 2
    try:
        view = RegionView(args.path)
        if args.key is not None:
            return _show_key(view, args.path, args.key, args.json)
        while True:
            snap = snapshot(view, args.top)
            if args.json:
                print(json.dumps(snap, indent=None if args.watch else 2), flush=True)
            else:
                if args.watch:
                    print("\033[H\033[2J", end="")
                print(render(args.path, snap), flush=True)
            if not args.watch:
                return 0
            time.sleep(args.watch)
    except RegionError as e:
        print(f"fl-shm-inspect: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly, and let no flush at exit complain.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
