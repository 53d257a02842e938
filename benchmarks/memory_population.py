"""Peak RSS of a naturally partitioned data set as its population grows (run by hand).

Builds a synthetic Sentiment140-format CSV of N users (3 tweets each), prepares it once,
then, in a fresh process per population, builds the data set and loads a round's worth of
clients (as training does), and reports the peak resident set size of that process:

    .venv/bin/python benchmarks/memory_population.py --users 20000 200000

Lazy loading means the peak grows with the per-user index (offsets, names), not with
all users' tensors.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORDS = "good bad happy sad love hate today work home tired great awful fun boring".split()


def write_csv(path: Path, users: int, per_user: int = 3) -> None:
    import random

    rng = random.Random(0)
    with open(path, "w", encoding="latin-1") as out:
        for u in range(users):
            for k in range(per_user):
                polarity = rng.choice("04")
                text = " ".join(rng.choice(WORDS) for _ in range(12))
                out.write(
                    f'"{polarity}","{u * per_user + k}","Mon Apr 06 22:19:45 PDT 2009","NO_QUERY","user{u}","{text}"\n'
                )


def measure(root: str, users: int) -> dict:
    from fedsim.data import Sent140Dataset

    started = time.perf_counter()
    ds = Sent140Dataset(num_clients=users - 10, design_pool_size=10, root=root, min_samples=1, seed=0)
    built = time.perf_counter() - started
    loaded = 0
    for cid in range(0, ds.num_clients, max(1, ds.num_clients // 200)):  # ~200 clients, like a few rounds
        loaded += ds.client(cid).num_train
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "users": users,
        "peak_rss_mib": round(peak_kib / 1024, 1),
        "build_s": round(built, 3),
        "samples_loaded": loaded,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, nargs="+", default=[20_000, 200_000])
    parser.add_argument("--child", nargs=2, metavar=("ROOT", "USERS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child[0], int(args.child[1]))))
        return
    with tempfile.TemporaryDirectory() as tmp:
        for users in args.users:
            root = Path(tmp) / f"u{users}"
            root.mkdir()
            write_csv(root / "training.1600000.processed.noemoticon.csv", users)
            started = time.perf_counter()
            subprocess.run(
                [sys.executable, "-c", f"from fedsim.data.sent140 import prepare; prepare({str(root)!r})"], check=True
            )
            prepared_s = time.perf_counter() - started
            out = subprocess.run(
                [sys.executable, __file__, "--child", str(root), str(users)], check=True, capture_output=True, text=True
            )
            result = json.loads(out.stdout)
            result["prepare_s"] = round(prepared_s, 2)
            print(json.dumps(result))


if __name__ == "__main__":
    main()
