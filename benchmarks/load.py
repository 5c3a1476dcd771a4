"""The REST API under load, measured with Locust, the load tool the field uses: `./course api`'s
server (`python -m fmnist_lib serve`, one worker) on 127.0.0.1, the users of
`locustfile.py`. Prints figures; it is not a test and asserts nothing about speed.

    python benchmarks/load.py                # about 9 minutes: --seconds, --users, --smoke

1. The worst single requests, one at a time on an idle server: how much each makes the
   server's process grow (its peak resident memory over its idle size, from /proc).
2. The healthy mix and the hostile mix, each at 4, 16 and 64 users for a minute: requests/s,
   p50/p95/p99, the statuses answered, the server's peak memory and what it still holds after.
3. Both at once: healthy users at 16 beside hostile users at 4 (the hostile mix's CPU cost
   is what the healthy users' p95 shows).

After each run, a healthy request must still get the right answer (the one this process
computes on the same model); the script fails if it does not.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"
WORST = [
    "png",
    "phone jpeg",
    "bomb 15000x15000",
    "palette bomb 4900x4900",
    "palette bomb 7000x7000",
    "RGBA bomb 4900x4900",
    "progressive JPEG 4900x4900",
    "4 RGBA bombs in one request",
    "body of 40 MB",
    "1000 images",
    "32 MB of numbers",
]
TARGET_GROWTH_MB = 500  # one request of any kind
TARGET_P95_MS = 100  # healthy users at 16, hostile at 4 beside


def memory(pid: int) -> tuple[float, float]:
    """Resident and peak resident memory of ``pid`` in MB."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # Linux: the peak restarts from now


def server_pid(port: int) -> int:
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            words = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if b"serve" in words and b"fmnist_lib" in words and str(port).encode() in words:
            return int(cmdline.parent.name)
    raise RuntimeError(f"no server process on port {port}")


def post(url: str, body: bytes) -> tuple[int, dict]:
    request = urllib.request.Request(
        f"{url}/invocations", data=body, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def check_healthy(url: str, expected: str) -> None:
    import locustfile

    status, answer = post(url, locustfile.bodies()["png"])
    if status != 200 or answer["predictions"][0]["class_name"] != expected:
        raise SystemExit(f"the server no longer answers right: {status} {answer}")


def worst_requests(url: str, pid: int) -> list[dict]:
    import locustfile

    rows = []
    idle = memory(pid)[0]
    for name in WORST:
        reset_peak(pid)
        start = time.perf_counter()
        status, answer = post(url, locustfile.bodies()[name])
        seconds = time.perf_counter() - start
        rss, peak = memory(pid)
        rows.append(
            {
                "request": name,
                "status": status,
                "seconds": seconds,
                "growth_mb": peak - idle,
                "message": answer.get("message", "")[:90],
            }
        )
        idle = min(idle, rss)
    return rows


def locust(url: str, users: dict[str, int], seconds: int, folder: Path, tag: str):
    """One Locust process per user class (one core each at most: gevent), started together."""
    processes = []
    for user, count in users.items():
        prefix = folder / f"{tag}-{user}"
        command = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), user]
        command += ["--headless", "--users", str(count), "--spawn-rate", str(count)]
        command += ["--run-time", f"{seconds}s", "--host", url, "--csv", str(prefix)]
        command += ["--only-summary", "--stop-timeout", "70", "--loglevel", "ERROR"]
        env = {**os.environ, "FMNIST_LOAD_STATUSES": f"{prefix}-statuses.json"}
        log = open(f"{prefix}.log", "w")  # noqa: SIM115  (closed below)
        processes.append(
            (user, prefix, log, subprocess.Popen(command, stdout=log, stderr=log, env=env))
        )
    results = {}
    for user, prefix, log, process in processes:
        process.wait()
        log.close()
        with open(f"{prefix}_stats.csv") as stats:
            total = next(row for row in csv.DictReader(stats) if row["Name"] == "Aggregated")
        results[user] = {
            "users": users[user],
            "requests/s": _number(total["Requests/s"]),
            "p50": _number(total["50%"]),
            "p95": _number(total["95%"]),
            "p99": _number(total["99%"]),
            "statuses": json.loads(Path(f"{prefix}-statuses.json").read_text()),
        }
    return results


def _number(text: str) -> float:
    """Locust's figure, or NaN where it has none ("N/A": no request ended in the run)."""
    try:
        return float(text)
    except ValueError:
        return float("nan")


def _statuses(counts: dict[str, dict[str, int]]) -> str:
    total: dict[str, int] = {}
    for by_status in counts.values():
        for status, n in by_status.items():
            total[status] = total.get(status, 0) + n
    return ", ".join(f"{status}: {n}" for status, n in sorted(total.items()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/load.py", description=__doc__)
    parser.add_argument("--model", help="model URI (default: the registry's champion)")
    parser.add_argument("--seconds", type=int, default=60, help="per run (60)")
    parser.add_argument("--users", default="4,16,64", help="user counts (4,16,64)")
    parser.add_argument(
        "--worst-only", action="store_true", help="only the worst single requests (a minute)"
    )
    parser.add_argument(
        "--smoke", action="store_true", help="a few users for 5 s: to test the script"
    )
    args = parser.parse_args(argv)
    seconds = 5 if args.smoke else args.seconds
    counts = [2] if args.smoke else [int(u) for u in args.users.split(",")]
    return run(args.model, seconds, counts, args.smoke, args.worst_only)


def run(model: str | None, seconds: int, counts: list[int], smoke: bool, worst_only=False) -> int:
    import locustfile

    from fmnist_lib import api, artifact, registry

    try:
        uri = model or registry.CHAMPION_URI
        registry.champion()
    except registry.NoModelError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    expected = artifact.load(uri).classify([_first_png()])["class_name"][0]
    locustfile.bodies()  # made once, before the clock runs
    print(f"Machine: {_cpu()}, {os.cpu_count()} cores; model {uri}")
    with tempfile.TemporaryDirectory() as scratch, api.api_server(uri, workers=1) as url:
        folder = Path(scratch)
        pid = server_pid(int(url.rsplit(":", 1)[1]))
        check_healthy(url, expected)
        idle = memory(pid)[0]
        print(f"\nServer idle: {idle:.0f} MB resident\n\nThe worst single requests:")
        print(
            "| request | status | seconds | growth over idle (MB) | answer |\n"
            "|---|---:|---:|---:|---|"
        )
        worst = worst_requests(url, pid)
        for row in worst:
            print(
                f"| {row['request']} | {row['status']} | {row['seconds']:.2f} | "
                f"{row['growth_mb']:.0f} | {row['message']} |"
            )
        largest = max(worst, key=lambda r: r["growth_mb"])
        print(
            f"\nLargest growth: {largest['growth_mb']:.0f} MB ({largest['request']}); "
            f"target: under {TARGET_GROWTH_MB} MB: "
            f"{'met' if largest['growth_mb'] < TARGET_GROWTH_MB else 'missed'}"
        )
        check_healthy(url, expected)
        if worst_only:
            return 0

        print(
            "\n| mix | users | requests/s | p50 ms | p95 ms | p99 ms | statuses | peak MB "
            "| after MB |"
        )
        print("|---|---:|---:|---:|---:|---:|---|---:|---:|")
        runs = [({"Healthy": n}, f"healthy-{n}") for n in counts]
        if not smoke:  # the smoke run's hostile users run beside the healthy ones only
            runs += [({"Hostile": n}, f"hostile-{n}") for n in counts]
        both = {"Healthy": 16 if not smoke else 2, "Hostile": 4 if not smoke else 1}
        runs.append((both, "both"))
        table = []
        for users, tag in runs:
            reset_peak(pid)
            results = locust(url, users, seconds, folder, tag)
            time.sleep(1)
            rss, peak = memory(pid)
            check_healthy(url, expected)
            for user, result in results.items():
                beside = ""
                if tag == "both":
                    beside = " (hostile beside)" if user == "Healthy" else " (healthy beside)"
                table.append({"mix": user.lower() + beside, **result, "peak": peak, "after": rss})
                print(
                    f"| {user.lower()}{beside} | {result['users']} | {result['requests/s']:.1f} | "
                    f"{result['p50']:.0f} | {result['p95']:.0f} | {result['p99']:.0f} | "
                    f"{_statuses(result['statuses'])} | {peak:.0f} | {rss:.0f} |"
                )
        healthy_both = next(r for r in table if r["mix"] == "healthy (hostile beside)")
        print(
            f"\nHealthy p95 beside the hostile mix: {healthy_both['p95']:.0f} ms; target: under "
            f"{TARGET_P95_MS} ms: {'met' if healthy_both['p95'] < TARGET_P95_MS else 'missed'}"
        )
        print("The server answered a healthy request right after every run.")
    return 0


def _first_png() -> bytes:
    from fmnist_lib import preprocess
    from fmnist_lib.acquisition import load_test_set

    return preprocess.encode_png(load_test_set(download=False)[0][0])


def _cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "?"


if __name__ == "__main__":
    sys.exit(main())
